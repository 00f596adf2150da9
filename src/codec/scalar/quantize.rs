//! The ScalarModel's scalar quantizer, `round(9x) / 9`, applied to latents before decoding.

use anyhow::Result;
use candle_core::{DType, Tensor};

const LEVELS_PER_UNIT: f64 = 9.0;

/// `torch.round`: nearest integer, ties to even. (candle's `round` sends ties away from
/// zero.) At a tie y = k + ½ the even neighbour is 2·round(y/2), since y/2 = k/2 + ¼ is
/// never itself a tie. |y − round(y)| is exact in floating point, so ties are detected exactly.
pub(crate) fn round_half_even(y: &Tensor) -> Result<Tensor> {
    let nearest = y.round()?;
    let tie = (y - &nearest)?.abs()?.eq(0.5)?;
    let even = ((y * 0.5)?.round()? * 2.0)?;
    Ok(tie.where_cond(&even, &nearest)?)
}

/// `torch.round(9 * x) / 9` in f32 (a true division by 9, not a multiplication by 1/9).
pub(crate) fn quantize(latents: &Tensor) -> Result<Tensor> {
    let x = latents.to_dtype(DType::F32)?;
    let levels = round_half_even(&(x * LEVELS_PER_UNIT)?)?;
    let nine = Tensor::new(LEVELS_PER_UNIT as f32, levels.device())?;
    Ok(levels.broadcast_div(&nine)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn round(values: &[f32]) -> Vec<f32> {
        let t = Tensor::new(values, &Device::Cpu).unwrap();
        round_half_even(&t).unwrap().to_vec1().unwrap()
    }

    #[test]
    fn ties_go_to_the_even_neighbour() {
        assert_eq!(
            round(&[-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 1e6 + 0.5]),
            vec![-4.0, -2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0, 4.0, 1e6]
        );
    }

    #[test]
    fn non_ties_round_to_nearest() {
        let just_below_half = 0.5f32 - f32::EPSILON / 4.0;
        assert_eq!(
            round(&[
                -2.6,
                -2.4,
                -0.49,
                0.49,
                just_below_half,
                0.51,
                1.4999,
                2.5001,
                7.0
            ]),
            vec![-3.0, -2.0, -0.0, 0.0, 0.0, 1.0, 1.0, 3.0, 7.0]
        );
    }

    #[test]
    fn quantizes_to_ninths() {
        // 9 · 0.5 = 4.5 is a tie that rounds down to 4; 9 · 1.5 = 13.5 rounds up to 14.
        let x = Tensor::new(&[0.5f32, 1.5, -0.5, 0.3, -1.0], &Device::Cpu).unwrap();
        let q: Vec<f32> = quantize(&x).unwrap().to_vec1().unwrap();
        let ninths = |k: f32| k / 9.0;
        assert_eq!(
            q,
            vec![
                ninths(4.0),
                ninths(14.0),
                ninths(-4.0),
                ninths(3.0),
                ninths(-9.0)
            ]
        );
    }
}
