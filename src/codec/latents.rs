//! Checks on latent frames handed to the codec from outside (`(frames, channels)` tensors).

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::error::CodecInputError;

/// Errors unless `latents` is `(frames, channels)`.
pub(crate) fn check_shape(latents: &Tensor, channels: usize) -> Result<(), CodecInputError> {
    match latents.dims() {
        [_, c] if *c == channels => Ok(()),
        found => Err(CodecInputError::LatentShape {
            found: found.to_vec(),
            channels,
        }),
    }
}

/// Errors on the first NaN or infinity, naming its frame (counted from `first_frame`) and
/// channel. One scalar comes back to the host when all is well: 0·x sums to exactly 0
/// unless some x is NaN or ±inf (0·inf is NaN).
pub(crate) fn check_finite(latents: &Tensor, first_frame: usize) -> Result<()> {
    let probe = latents
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    if probe == 0.0 {
        return Ok(());
    }
    let rows = latents.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    for (frame, row) in rows.iter().enumerate() {
        if let Some((channel, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CodecInputError::NonFiniteLatent {
                frame: first_frame + frame,
                channel,
                value,
            }
            .into());
        }
    }
    anyhow::bail!("latents hold non-finite values (0·x summed to {probe})")
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn non_finite_values_are_located() {
        let mut v = vec![0.5f32; 12];
        v[7] = f32::NAN;
        let t = Tensor::from_vec(v, (3, 4), &Device::Cpu).unwrap();
        let err = check_finite(&t, 10).unwrap_err();
        let err = err.downcast_ref::<CodecInputError>().unwrap();
        assert!(
            matches!(err, CodecInputError::NonFiniteLatent { frame: 11, channel: 3, value } if value.is_nan())
        );
        let t = Tensor::from_vec(vec![1f32, f32::NEG_INFINITY], (1, 2), &Device::Cpu).unwrap();
        assert!(check_finite(&t, 0).is_err());
        let t = Tensor::from_vec(vec![1e30f32, 1e30, -1e30, 3.0], (2, 2), &Device::Cpu).unwrap();
        assert!(check_finite(&t, 0).is_ok());
        assert!(check_shape(&t, 3).is_err() && check_shape(&t, 2).is_ok());
    }
}
