use std::collections::{BTreeMap, HashSet};

use super::{WeightStore, WeightsError};

/// How a synthetic tensor is drawn. The distributions follow the reference fixtures' generator
/// (uniform draws of the same variance stand in for normal ones), so a random model stays
/// numerically tame through all its layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// A weight matrix or conv kernel: variance 1 / fan_in.
    Fan(usize),
    /// Zero-mean with this standard deviation (embeddings, biases).
    Normal(f32),
    /// Uniform on [lo, hi) (PReLU slopes, weight-norm gains).
    Uniform(f32, f32),
    /// 1 + 0.1·noise: norm scales.
    NearOne,
    /// A fixed value.
    Const(f32),
}

/// One tensor a model expects.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// The complete list of tensors a model reads, plus tensors a checkpoint may carry that the
/// model does not use (validated for shape, never loaded) and name suffixes that are ignored.
#[derive(Debug, Clone, Default)]
pub struct ModelSpec {
    pub model: String,
    pub required: Vec<TensorSpec>,
    pub optional: Vec<TensorSpec>,
    pub ignored_suffixes: Vec<&'static str>,
}

impl ModelSpec {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], init: Init) {
        self.required.push(TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
        });
    }

    pub fn allow(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.optional.push(TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init: Init::Const(0.0),
        });
    }

    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.required.iter().find(|t| t.name == name)
    }

    /// Compares the stored tensors with the spec and reports every difference in one error.
    pub fn check(&self, store: &WeightStore) -> Result<(), WeightsError> {
        self.check_shapes(&store.shapes())
            .map_err(
                |(missing, unexpected, wrong_shape)| WeightsError::Mismatch {
                    model: self.model.clone(),
                    dir: store.dir().to_path_buf(),
                    missing,
                    unexpected,
                    wrong_shape,
                },
            )
    }

    #[allow(clippy::type_complexity)]
    fn check_shapes(
        &self,
        found: &BTreeMap<String, Vec<usize>>,
    ) -> Result<
        (),
        (
            Vec<(String, Vec<usize>)>,
            Vec<(String, Vec<usize>)>,
            Vec<(String, Vec<usize>, Vec<usize>)>,
        ),
    > {
        let mut missing = Vec::new();
        let mut wrong_shape = Vec::new();
        for t in &self.required {
            match found.get(&t.name) {
                None => missing.push((t.name.clone(), t.shape.clone())),
                Some(s) if *s != t.shape => {
                    wrong_shape.push((t.name.clone(), t.shape.clone(), s.clone()))
                }
                Some(_) => {}
            }
        }
        for t in &self.optional {
            if let Some(s) = found.get(&t.name).filter(|s| **s != t.shape) {
                wrong_shape.push((t.name.clone(), t.shape.clone(), s.clone()));
            }
        }
        let known: HashSet<&str> = self
            .required
            .iter()
            .chain(&self.optional)
            .map(|t| t.name.as_str())
            .collect();
        let unexpected: Vec<_> = found
            .iter()
            .filter(|(name, _)| !known.contains(name.as_str()))
            .filter(|(name, _)| !self.ignored_suffixes.iter().any(|s| name.ends_with(s)))
            .map(|(name, shape)| (name.clone(), shape.clone()))
            .collect();
        if missing.is_empty() && unexpected.is_empty() && wrong_shape.is_empty() {
            Ok(())
        } else {
            Err((missing, unexpected, wrong_shape))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        let mut s = ModelSpec::new("test");
        s.add("a", &[2, 3], Init::Fan(3));
        s.add("b", &[4], Init::NearOne);
        s.allow("opt", &[5]);
        s.ignored_suffixes.push(".rope.cache");
        s
    }

    fn found(entries: &[(&str, &[usize])]) -> BTreeMap<String, Vec<usize>> {
        entries
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect()
    }

    #[test]
    fn exact_match_passes_and_optional_or_ignored_tensors_are_tolerated() {
        let s = spec();
        assert!(s
            .check_shapes(&found(&[("a", &[2, 3]), ("b", &[4])]))
            .is_ok());
        let extra = found(&[
            ("a", &[2, 3]),
            ("b", &[4]),
            ("opt", &[5]),
            ("x.rope.cache", &[9]),
        ]);
        assert!(s.check_shapes(&extra).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = spec();
        let (missing, unexpected, wrong) = s
            .check_shapes(&found(&[("a", &[3, 2]), ("zzz", &[1]), ("opt", &[6])]))
            .unwrap_err();
        assert_eq!(missing, vec![("b".to_string(), vec![4])]);
        assert_eq!(unexpected, vec![("zzz".to_string(), vec![1])]);
        assert_eq!(
            wrong,
            vec![
                ("a".to_string(), vec![2, 3], vec![3, 2]),
                ("opt".to_string(), vec![5], vec![6])
            ]
        );
    }
}
