//! Convolutions over a stream of frames. Each keeps the input frames its next outputs still
//! need, so a chunk is convolved with its true left context, and chunked decoding equals
//! decoding all at once. A fresh layer starts from the reference's zero padding.
//!
//! A conv is one matrix product, `weight (out, in·k) @ columns (batch, in·k, n)`, between
//! two of our ops (`ops.rs`): the columns read from the history and the new frames
//! directly, and an epilogue that adds the bias and applies what follows the conv in the
//! model (PReLU, the residual) in one pass.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::ops::{bias_act, overlap_add, stream_columns};

/// What follows a conv in the model, applied with its bias.
#[derive(Debug, Clone, Copy)]
pub(super) enum Then<'a> {
    /// Nothing: the conv's output.
    Nothing,
    /// `nn.PReLU` with this slope.
    Prelu(f32),
    /// PReLU, then this residual added (a `ResidualUnit`'s input).
    PreluPlus(f32, &'a Tensor),
}

impl Then<'_> {
    fn apply(self, y: &Tensor, bias: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Then::Nothing => bias_act(y, bias, 1.0, None)?,
            Then::Prelu(slope) => bias_act(y, bias, slope, None)?,
            Then::PreluPlus(slope, residual) => bias_act(y, bias, slope, Some(residual))?,
        })
    }
}

/// A stride-1 Conv1d `(batch, in, frames)` → `(batch, out, frames)` fed chunk by chunk.
#[derive(Clone)]
pub(super) struct StreamConv {
    /// `(out, in · kernel)`: the kernel with its input dims merged.
    weight: Tensor,
    /// `(out)`.
    bias: Tensor,
    kernel: usize,
    dilation: usize,
    /// Input frames each output looks back over, beyond its own: dilation · (kernel − 1).
    span: usize,
    /// Zero frames before the first input: the whole span for a causal conv, half of it for
    /// the centred look-ahead conv.
    left_pad: usize,
    /// The last `span` input frames, zeros before the stream: a buffer allocated at the
    /// first chunk and overwritten in place after, so a captured step finds it at the same
    /// address every time. `None` before the first chunk.
    history: Option<Tensor>,
    /// Leading outputs still to drop: a full span of zeros stands before the first input,
    /// but a centred conv's first `span − left_pad` outputs would be for frames before it.
    lead_in: usize,
}

impl StreamConv {
    /// heartlib's causal `Conv1d`: left padding `dilation · (kernel − 1)`.
    pub fn causal(weight: Tensor, bias: Tensor, dilation: usize) -> Result<Self> {
        let mut conv = Self::new(weight, bias, dilation)?;
        conv.left_pad = conv.span;
        Ok(conv)
    }

    /// A Conv1d padded by `(kernel − 1) / 2` on both sides. Each output waits for
    /// `(kernel − 1) / 2` later frames; `flush` supplies the right padding.
    pub fn centered(weight: Tensor, bias: Tensor) -> Result<Self> {
        let mut conv = Self::new(weight, bias, 1)?;
        conv.left_pad = conv.span / 2;
        conv.lead_in = conv.span - conv.left_pad;
        Ok(conv)
    }

    fn new(weight: Tensor, bias: Tensor, dilation: usize) -> Result<Self> {
        let (out, inp, kernel) = weight.dims3()?;
        Ok(Self {
            weight: weight.reshape((out, inp * kernel))?.contiguous()?,
            bias: bias.reshape(out)?,
            kernel,
            span: dilation * (kernel - 1),
            dilation,
            left_pad: 0,
            history: None,
            lead_in: 0,
        })
    }

    /// Outputs for every frame whose receptive field is complete (one per input frame once
    /// the look-ahead is filled), followed by `then`; `(batch, out, 0)` when none is.
    pub fn step(&mut self, x: &Tensor, then: Then) -> Result<Tensor> {
        let (batch, _, n) = x.dims3()?;
        if n == 0 {
            return empty(batch, self.weight.dim(0)?, x.dtype(), x.device());
        }
        let y = if self.span == 0 {
            self.product(&x.contiguous()?)?
        } else {
            let history = self.history(x)?;
            let columns = stream_columns(&history, x, self.kernel, self.dilation)?;
            // After the columns are read (in stream order): the last `span` frames.
            let kept = if n >= self.span {
                x.narrow(2, n - self.span, self.span)?.contiguous()?
            } else {
                Tensor::cat(&[&history.narrow(2, n, self.span - n)?, x], 2)?
            };
            history.slice_set(&kept, 2, 0)?;
            self.product(&columns)?
        };
        let out = then.apply(&y, &self.bias)?;
        let dropped = self.lead_in.min(n);
        self.lead_in -= dropped;
        Ok(out.narrow(2, dropped, n - dropped)?)
    }

    /// `weight @ columns`, `(batch, in·k, n)` → `(batch, out, n)`.
    fn product(&self, columns: &Tensor) -> Result<Tensor> {
        let batch = columns.dim(0)?;
        Ok(self.weight.broadcast_left(batch)?.matmul(columns)?)
    }

    /// The history buffer, made of zeros (the reference's left padding) at the first chunk.
    fn history(&mut self, x: &Tensor) -> Result<Tensor> {
        if let Some(history) = &self.history {
            return Ok(history.clone());
        }
        let (batch, channels, _) = x.dims3()?;
        let zeros = Tensor::zeros((batch, channels, self.span), x.dtype(), x.device())?;
        Ok(self.history.insert(zeros).clone())
    }

    /// Whether every output from now on is for a new input frame (the lead-in is dropped).
    pub fn is_steady(&self) -> bool {
        self.history.is_some() && self.lead_in == 0
    }

    /// Back to the start of a stream, keeping the history buffer (zeroed).
    pub fn reset(&mut self) -> Result<()> {
        if let Some(history) = &self.history {
            history.zero_set()?;
        }
        self.lead_in = self.span - self.left_pad;
        Ok(())
    }

    /// The outputs still waiting for right context, computed with the reference's zero
    /// padding at the end of the input.
    pub fn flush(&mut self, batch: usize, in_channels: usize, then: Then) -> Result<Tensor> {
        let right_pad = self.span - self.left_pad;
        let zeros = Tensor::zeros(
            (batch, in_channels, right_pad),
            self.weight.dtype(),
            self.weight.device(),
        )?;
        self.step(&zeros, then)
    }
}

/// heartlib's causal ConvTranspose1d (kernel = 2·stride, the last `stride` outputs
/// trimmed): output samples `[t·s, (t+1)·s)` are the first half of input frame t's kernel
/// response plus the second half of frame t − 1's, so the state is the previous chunk's last
/// frame. Computed as one matmul per chunk (every frame's full response), then that overlap-add.
#[derive(Clone)]
pub(super) struct CausalConvTranspose {
    /// `(out · 2·stride, in)`: row `o·2s + q` is output channel o's kernel tap q.
    weight: Tensor,
    /// `(out)`.
    bias: Tensor,
    stride: usize,
    /// `(batch, in, 1)`: the previous input frame, zeros before the stream; overwritten in
    /// place like [`StreamConv`]'s history.
    previous: Option<Tensor>,
}

impl CausalConvTranspose {
    pub fn new(weight: Tensor, bias: Tensor, stride: usize) -> Result<Self> {
        let (inp, out, kernel) = weight.dims3()?;
        anyhow::ensure!(
            kernel == 2 * stride,
            "causal ConvTranspose1d needs kernel = 2 * stride"
        );
        Ok(Self {
            weight: weight.reshape((inp, out * kernel))?.t()?.contiguous()?,
            bias: bias.reshape(out)?,
            stride,
            previous: None,
        })
    }

    /// `(batch, in, n)` → `(batch, out, n · stride)`.
    pub fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let (batch, inp, n) = x.dims3()?;
        if n == 0 {
            return empty(batch, self.bias.dim(0)?, x.dtype(), x.device());
        }
        let previous = match &self.previous {
            Some(previous) => previous.clone(),
            None => self
                .previous
                .insert(Tensor::zeros((batch, inp, 1), x.dtype(), x.device())?)
                .clone(),
        };
        let frames = Tensor::cat(&[&previous, x], 2)?;
        previous.slice_set(&x.narrow(2, n - 1, 1)?.contiguous()?, 2, 0)?;
        // (out · 2s, in) @ (batch, in, n+1) → every frame's response (batch, out · 2s, n+1).
        let response = self.weight.broadcast_left(batch)?.matmul(&frames)?;
        Ok(overlap_add(&response, &self.bias, self.stride)?)
    }

    /// Back to the start of a stream, keeping the buffer (zeroed).
    pub fn reset(&mut self) -> Result<()> {
        match &self.previous {
            Some(previous) => Ok(previous.zero_set()?),
            None => Ok(()),
        }
    }
}

fn empty(batch: usize, channels: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros((batch, channels, 0), dtype, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(batch: usize, channels: usize, frames: usize, offset: f32) -> Tensor {
        let n = batch * channels * frames;
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 + offset) * 0.37).sin()).collect();
        Tensor::from_vec(v, (batch, channels, frames), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Feeds `x` in chunks of the given sizes, then flushes.
    fn chunked(conv: &mut StreamConv, x: &Tensor, sizes: &[usize]) -> Tensor {
        let mut start = 0;
        let mut parts = Vec::new();
        for &n in sizes {
            parts.push(
                conv.step(&x.narrow(2, start, n).unwrap(), Then::Nothing)
                    .unwrap(),
            );
            start += n;
        }
        parts.push(
            conv.flush(x.dim(0).unwrap(), x.dim(1).unwrap(), Then::Nothing)
                .unwrap(),
        );
        Tensor::cat(&parts, 2).unwrap()
    }

    #[test]
    fn causal_conv_chunks_equal_left_padded_conv() {
        let (w, b) = (
            ramp(4, 3, 7, 1.0),
            ramp(1, 1, 4, 2.0).flatten_all().unwrap(),
        );
        let x = ramp(2, 3, 20, 0.0);
        let reference = x
            .pad_with_zeros(2, 18, 0)
            .unwrap()
            .conv1d(&w, 0, 1, 3, 1)
            .unwrap();
        let reference = reference
            .broadcast_add(&b.reshape((1, 4, 1)).unwrap())
            .unwrap();
        let mut conv = StreamConv::causal(w, b, 3).unwrap();
        let out = chunked(&mut conv, &x, &[1, 5, 0, 14]);
        assert_eq!(out.dims(), reference.dims());
        assert!(max_diff(&out, &reference) < 1e-5);
    }

    #[test]
    fn centered_conv_holds_back_its_look_ahead() {
        let (w, b) = (
            ramp(4, 3, 5, 1.0),
            ramp(1, 1, 4, 2.0).flatten_all().unwrap(),
        );
        let x = ramp(2, 3, 9, 0.0);
        let reference = x
            .conv1d(&w, 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1)).unwrap())
            .unwrap();
        let mut conv = StreamConv::centered(w, b).unwrap();
        assert_eq!(
            conv.step(&x.narrow(2, 0, 2).unwrap(), Then::Nothing)
                .unwrap()
                .dim(2)
                .unwrap(),
            0
        );
        assert_eq!(
            conv.step(&x.narrow(2, 2, 1).unwrap(), Then::Nothing)
                .unwrap()
                .dim(2)
                .unwrap(),
            1
        );
        let rest = chunked(&mut conv, &x.narrow(2, 3, 6).unwrap(), &[6]);
        let first = reference.narrow(2, 0, 1).unwrap();
        let out = Tensor::cat(&[&first, &rest], 2).unwrap();
        assert!(max_diff(&out, &reference) < 1e-5);
    }

    #[test]
    fn causal_conv_transpose_chunks_equal_trimmed_full_transpose() {
        let stride = 3;
        let (w, b) = (
            ramp(3, 2, 2 * stride, 1.0),
            ramp(1, 1, 2, 2.0).flatten_all().unwrap(),
        );
        let x = ramp(2, 3, 7, 0.0);
        // candle 0.11's CPU conv_transpose1d is wrong for batch > 1: transpose row by row.
        let rows: Vec<Tensor> = (0..2)
            .map(|b| {
                x.narrow(0, b, 1)
                    .unwrap()
                    .conv_transpose1d(&w, 0, 0, stride, 1, 1)
                    .unwrap()
            })
            .collect();
        let full = Tensor::cat(&rows, 0).unwrap();
        let reference = full
            .narrow(2, 0, 7 * stride)
            .unwrap()
            .broadcast_add(&b.reshape((1, 2, 1)).unwrap())
            .unwrap();
        let mut conv = CausalConvTranspose::new(w, b, stride).unwrap();
        let parts: Vec<Tensor> = [(0, 2), (2, 1), (3, 4)]
            .iter()
            .map(|&(s, n)| conv.step(&x.narrow(2, s, n).unwrap()).unwrap())
            .collect();
        assert!(max_diff(&Tensor::cat(&parts, 2).unwrap(), &reference) < 1e-5);
    }

    /// The epilogue against candle's own ops: bias, `x > 0 ? x : slope·x`, then the residual,
    /// each rounded to f32 in that order (bit for bit).
    #[test]
    fn epilogue_is_bias_then_prelu_then_residual() {
        let y = ramp(2, 4, 6, 0.0);
        let b = ramp(1, 1, 4, 2.0).flatten_all().unwrap();
        let residual = ramp(2, 4, 6, 5.0);
        let slope = 0.25f32;
        let biased = y.broadcast_add(&b.reshape((1, 4, 1)).unwrap()).unwrap();
        let prelu = biased
            .gt(0.0)
            .unwrap()
            .where_cond(&biased, &biased.affine(slope as f64, 0.0).unwrap())
            .unwrap();
        let expected = (&prelu + &residual).unwrap();
        let out = Then::PreluPlus(slope, &residual).apply(&y, &b).unwrap();
        assert_eq!(max_diff(&out, &expected), 0.0);
        assert_eq!(
            max_diff(&Then::Prelu(slope).apply(&y, &b).unwrap(), &prelu),
            0.0
        );
        assert_eq!(
            max_diff(&Then::Nothing.apply(&y, &b).unwrap(), &biased),
            0.0
        );
        let negatives: f32 = biased
            .lt(0.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(negatives > 0.0, "the test must exercise the slope");
    }

    /// bf16 in, bf16 out: the epilogue computes in f32 and rounds once.
    #[test]
    fn bf16_epilogue_rounds_once() {
        let y = ramp(1, 2, 5, 0.5);
        let b = Tensor::new(&[0.3f32, -0.7], &Device::Cpu).unwrap();
        let as_bf16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let out = bias_act(&as_bf16(&y), &as_bf16(&b), 0.5, None).unwrap();
        assert_eq!(out.dtype(), DType::BF16);
        let back = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let v = back(&as_bf16(&y))
            .broadcast_add(&back(&as_bf16(&b)).reshape((1, 2, 1)).unwrap())
            .unwrap();
        let v = v
            .gt(0.0)
            .unwrap()
            .where_cond(&v, &v.affine(0.5, 0.0).unwrap())
            .unwrap();
        assert_eq!(max_diff(&back(&out), &back(&as_bf16(&v))), 0.0);
    }
}
