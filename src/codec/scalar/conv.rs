//! Convolutions over a stream of frames. Each keeps the input frames its next outputs still
//! need, so a chunk is convolved with its true left context, and chunked decoding equals
//! decoding all at once. A fresh layer starts from the reference's zero padding.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// A stride-1 Conv1d `(batch, in, frames)` → `(batch, out, frames)` fed chunk by chunk.
#[derive(Clone)]
pub(super) struct StreamConv {
    weight: Tensor,
    /// `(1, out, 1)`.
    bias: Tensor,
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
        let (out, _, kernel) = weight.dims3()?;
        Ok(Self {
            span: dilation * (kernel - 1),
            weight,
            bias: bias.reshape((1, out, 1))?,
            dilation,
            left_pad: 0,
            history: None,
            lead_in: 0,
        })
    }

    /// Outputs for every frame whose receptive field is complete (one per input frame once
    /// the look-ahead is filled); `(batch, out, 0)` when none is.
    pub fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let (batch, _, n) = x.dims3()?;
        if self.span == 0 {
            return self.convolve(x);
        }
        if n == 0 {
            return empty(batch, self.weight.dim(0)?, x.dtype(), x.device());
        }
        let history = self.history(x)?;
        let frames = Tensor::cat(&[&history, x], 2)?;
        history.slice_set(&frames.narrow(2, n, self.span)?.contiguous()?, 2, 0)?;
        let out = self.convolve(&frames)?;
        let dropped = self.lead_in.min(n);
        self.lead_in -= dropped;
        Ok(out.narrow(2, dropped, n - dropped)?)
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
    pub fn flush(&mut self, batch: usize, in_channels: usize) -> Result<Tensor> {
        let right_pad = self.span - self.left_pad;
        let zeros = Tensor::zeros(
            (batch, in_channels, right_pad),
            self.weight.dtype(),
            self.weight.device(),
        )?;
        self.step(&zeros)
    }

    fn convolve(&self, frames: &Tensor) -> Result<Tensor> {
        Ok(frames
            .conv1d(&self.weight, 0, 1, self.dilation, 1)?
            .broadcast_add(&self.bias)?)
    }
}

/// heartlib's causal ConvTranspose1d (kernel = 2·stride, the last `stride` outputs
/// trimmed): output samples `[t·s, (t+1)·s)` are the first half of input frame t's kernel
/// response plus the second half of frame t − 1's, so the state is the previous chunk's last
/// frame. Computed as one matmul per chunk (every frame's full response), then that overlap-add.
#[derive(Clone)]
pub(super) struct CausalConvTranspose {
    /// `(in, out · 2·stride)`: the kernel `(in, out, 2·stride)` with its last two dims merged.
    weight: Tensor,
    bias: Tensor,
    out_channels: usize,
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
            weight: weight.reshape((inp, out * kernel))?,
            bias: bias.reshape((1, out, 1))?,
            out_channels: out,
            stride,
            previous: None,
        })
    }

    /// `(batch, in, n)` → `(batch, out, n · stride)`.
    pub fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let (batch, inp, n) = x.dims3()?;
        let (out, s) = (self.out_channels, self.stride);
        let previous = match &self.previous {
            Some(previous) => previous.clone(),
            None => self
                .previous
                .insert(Tensor::zeros((batch, inp, 1), x.dtype(), x.device())?)
                .clone(),
        };
        let frames = Tensor::cat(&[&previous, x], 2)?;
        previous.slice_set(&frames.narrow(2, n, 1)?.contiguous()?, 2, 0)?;
        // (batch · (n+1), in) @ (in, out · 2s) → every frame's response (batch, n+1, out, 2s).
        let response = frames
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * (n + 1), inp))?
            .matmul(&self.weight)?
            .reshape((batch, n + 1, out, 2 * s))?;
        let own = response.narrow(1, 1, n)?.narrow(3, 0, s)?;
        let carried = response.narrow(1, 0, n)?.narrow(3, s, s)?;
        Ok((own + carried)?
            .permute((0, 2, 1, 3))?
            .reshape((batch, out, n * s))?
            .broadcast_add(&self.bias)?)
    }

    /// Back to the start of a stream, keeping the buffer (zeroed).
    pub fn reset(&mut self) -> Result<()> {
        match &self.previous {
            Some(previous) => Ok(previous.zero_set()?),
            None => Ok(()),
        }
    }
}

/// `nn.PReLU()` with its single learned slope: `x` where x > 0, `slope · x` elsewhere.
pub(super) fn prelu(x: &Tensor, slope: f32) -> Result<Tensor> {
    Ok(x.gt(0.0)?.where_cond(x, &x.affine(slope as f64, 0.0)?)?)
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
            parts.push(conv.step(&x.narrow(2, start, n).unwrap()).unwrap());
            start += n;
        }
        parts.push(conv.flush(x.dim(0).unwrap(), x.dim(1).unwrap()).unwrap());
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
            conv.step(&x.narrow(2, 0, 2).unwrap())
                .unwrap()
                .dim(2)
                .unwrap(),
            0
        );
        assert_eq!(
            conv.step(&x.narrow(2, 2, 1).unwrap())
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

    #[test]
    fn prelu_scales_negative_values_only() {
        let x = Tensor::new(&[-2f32, -0.5, 0.0, 3.0], &Device::Cpu).unwrap();
        assert_eq!(
            prelu(&x, 0.25).unwrap().to_vec1::<f32>().unwrap(),
            vec![-0.5, -0.125, 0.0, 3.0]
        );
    }
}
