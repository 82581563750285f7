//! The arithmetic of online logistic regression, written to give River's numbers
//! (`river.linear_model.LogisticRegression` with its optimizers): the same logit clipping, the
//! same gradient of the log loss, the same order of updates, in f64.

use rill_engine::aggregate::log_loss;
use serde::{Deserialize, Serialize};

/// How weights move.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// `w ← w − lr·g` (River's `optim.SGD`).
    Sgd {
        #[serde(default = "sgd_lr")]
        learning_rate: f64,
    },
    /// FTRL-Proximal (McMahan et al. 2013; Flink ML's online optimizer), as River's
    /// `optim.FTRLProximal`: per-coordinate `z` and `n`.
    Ftrl {
        #[serde(default = "ftrl_alpha")]
        alpha: f64,
        #[serde(default = "one")]
        beta: f64,
        #[serde(default)]
        l1: f64,
        #[serde(default = "one")]
        l2: f64,
    },
    /// Adam (River's `optim.Adam`): per-coordinate first and second moments.
    Adam {
        #[serde(default = "adaptive_lr")]
        learning_rate: f64,
        #[serde(default = "beta_1")]
        beta_1: f64,
        #[serde(default = "beta_2")]
        beta_2: f64,
        #[serde(default = "eps")]
        eps: f64,
    },
    /// AdaGrad (River's `optim.AdaGrad`): per-coordinate sum of squared gradients.
    #[serde(rename = "adagrad")]
    AdaGrad {
        #[serde(default = "adaptive_lr")]
        learning_rate: f64,
        #[serde(default = "eps")]
        eps: f64,
    },
}

fn sgd_lr() -> f64 {
    0.01
}
fn ftrl_alpha() -> f64 {
    0.05
}
fn one() -> f64 {
    1.0
}
fn adaptive_lr() -> f64 {
    0.1
}
fn beta_1() -> f64 {
    0.9
}
fn beta_2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Sgd { learning_rate: sgd_lr() }
    }
}

impl Optimizer {
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Ftrl { .. } => "ftrl",
            Optimizer::Adam { .. } => "adam",
            Optimizer::AdaGrad { .. } => "adagrad",
        }
    }

    /// What is wrong with the settings, if anything.
    pub fn check(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| if v.is_finite() && v > 0.0 { Ok(()) } else { Err(format!("`{name}` must be a positive number, got {v}")) };
        let non_negative = |name: &str, v: f64| if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(format!("`{name}` must be zero or more, got {v}")) };
        let fraction = |name: &str, v: f64| if (0.0..1.0).contains(&v) { Ok(()) } else { Err(format!("`{name}` must be in [0, 1), got {v}")) };
        match *self {
            Optimizer::Sgd { learning_rate } => positive("learning_rate", learning_rate),
            Optimizer::Ftrl { alpha, beta, l1, l2 } => {
                positive("alpha", alpha)?;
                non_negative("beta", beta)?;
                non_negative("l1", l1)?;
                non_negative("l2", l2)
            }
            Optimizer::Adam { learning_rate, beta_1, beta_2, eps } => {
                positive("learning_rate", learning_rate)?;
                fraction("beta_1", beta_1)?;
                fraction("beta_2", beta_2)?;
                positive("eps", eps)
            }
            Optimizer::AdaGrad { learning_rate, eps } => {
                positive("learning_rate", learning_rate)?;
                positive("eps", eps)
            }
        }
    }
}

/// What every model of one transform shares.
#[derive(Clone, Debug)]
pub struct Settings {
    pub optimizer: Optimizer,
    pub intercept_learning_rate: f64,
    /// L2 penalty added to the gradient: `g = loss'·x + l2·w`.
    pub l2: f64,
    /// Probability above which the prediction is positive.
    pub threshold: f64,
    /// Labelled records whose mean gradient makes one step (1: a step per record, as River's
    /// `learn_one`).
    pub batch_size: usize,
    /// Sum the log loss of learned records (for the model output's `log_loss`; costs a `ln`).
    pub track_loss: bool,
}

/// River's `utils.math.sigmoid`: exactly 0 and 1 beyond a logit of ±30.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x < -30.0 {
        0.0
    } else if x > 30.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}

/// River's `optim.losses.Log.gradient`: the derivative of the log loss with respect to the
/// logit, for a label of 0 or 1 (saturated beyond a margin of ±18, so it never overflows).
#[inline]
pub fn log_loss_gradient(label: bool, logit: f64) -> f64 {
    let y = if label { 1.0 } else { -1.0 };
    let z = logit * y;
    if z > 18.0 {
        (-z).exp() * -y
    } else if z < -18.0 {
        -y
    } else {
        -y / (z.exp() + 1.0)
    }
}

/// One logistic regression: weights, intercept, the optimizer's accumulators, and what it has
/// learned so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// The optimizer's two numbers per weight: Adam (m, v), FTRL (z, n), AdaGrad (g², -).
    pub accumulators: Vec<[f64; 2]>,
    /// Optimizer steps taken (River's `n_iterations`; Adam's bias correction uses it).
    pub steps: u64,
    /// Increases with every step; carried over from an initial model.
    pub version: u64,
    /// Records scored, and labelled records learned from.
    pub scored: u64,
    pub learned: u64,
    /// Progressive validation so far: summed log loss and correct predictions of the learned
    /// records (each scored before it was learned from).
    pub loss_sum: f64,
    pub hits: u64,
    /// The labels seen are bools (the prediction is a bool too), else 0/1.
    #[serde(default)]
    pub bool_labels: bool,
    /// Mini-batch: summed loss gradients times features, summed loss gradients, and how many.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<f64>,
    #[serde(default)]
    pub pending_intercept: f64,
    #[serde(default)]
    pub pending_n: usize,
}

/// Why a record was not learned from.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The record has another number of features than the model.
    Dimension { expected: usize, got: usize },
    /// The update would have made a weight infinite or NaN (the model is unchanged).
    NotFinite,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Dimension { expected, got } => write!(f, "the model has {expected} features, this record {got}"),
            Refused::NotFinite => write!(f, "learning from this record would make the model's weights infinite or NaN (the model is left as it was); scale the features down"),
        }
    }
}

impl Model {
    pub fn zeros(n: usize) -> Model {
        Model { weights: vec![0.0; n], accumulators: vec![[0.0; 2]; n], ..Model::default() }
    }

    /// The logit `w·x + b` (terms added in feature order, as River's dict walk does).
    #[inline]
    pub fn logit(&self, x: &[f64]) -> f64 {
        let mut s = 0.0;
        for (w, x) in self.weights.iter().zip(x) {
            s += w * x;
        }
        s + self.intercept
    }

    #[inline]
    pub fn probability(&self, x: &[f64]) -> f64 {
        sigmoid(self.logit(x))
    }

    /// Scores `x` (with `label`: then learns from it). Returns the probability given before
    /// learning; `Err` leaves the model unchanged, the score not counted.
    #[inline]
    pub fn score(&mut self, settings: &Settings, x: &[f64], label: Option<bool>, scratch: &mut Model) -> Result<f64, Refused> {
        if x.len() != self.weights.len() {
            return Err(Refused::Dimension { expected: self.weights.len(), got: x.len() });
        }
        let logit = self.logit(x);
        if logit.is_nan() {
            return Err(Refused::NotFinite);
        }
        let (p, g) = probability_and_gradient(logit, label);
        if let Some(y) = label {
            if settings.batch_size <= 1 {
                self.intercept_step(settings, g, scratch, |i, w| g * x[i] + settings.l2 * w)?;
            } else {
                self.gather(settings, x, g, scratch)?;
            }
            self.learned += 1;
            if settings.track_loss {
                self.loss_sum += log_loss(p, y);
            }
            self.hits += ((p > settings.threshold) == y) as u64;
        }
        self.scored += 1;
        Ok(p)
    }

    /// Adds one record to the mini-batch; a full batch makes one step with its mean gradient.
    fn gather(&mut self, settings: &Settings, x: &[f64], g: f64, scratch: &mut Model) -> Result<(), Refused> {
        if self.pending.len() != x.len() {
            self.pending = vec![0.0; x.len()];
        }
        if !(self.pending_intercept + g).is_finite() || !self.pending.iter().zip(x).all(|(p, x)| (p + g * x).is_finite()) {
            return Err(Refused::NotFinite);
        }
        for (p, x) in self.pending.iter_mut().zip(x) {
            *p += g * x;
        }
        self.pending_intercept += g;
        self.pending_n += 1;
        if self.pending_n >= settings.batch_size {
            self.flush(settings, scratch)?;
        }
        Ok(())
    }

    /// Takes the step of a partly gathered mini-batch (at the end of input).
    pub fn flush(&mut self, settings: &Settings, scratch: &mut Model) -> Result<(), Refused> {
        if self.pending_n == 0 {
            return Ok(());
        }
        let n = self.pending_n as f64;
        let pending = std::mem::take(&mut self.pending);
        let g0 = self.pending_intercept / n;
        self.pending_intercept = 0.0;
        self.pending_n = 0;
        let stepped = self.intercept_step(settings, g0, scratch, |i, w| pending[i] / n + settings.l2 * w);
        self.pending = pending;
        self.pending.iter_mut().for_each(|p| *p = 0.0);
        stepped
    }

    /// One step (River's `_fit`): the intercept by the loss gradient `g`, then the optimizer's
    /// step with gradient `grad(i, w_i)` for every weight. The new weights and accumulators are
    /// written into `scratch` and swapped in only if they are all finite.
    #[inline]
    fn intercept_step(&mut self, settings: &Settings, g: f64, scratch: &mut Model, grad: impl Fn(usize, f64) -> f64) -> Result<(), Refused> {
        let intercept = self.intercept - settings.intercept_learning_rate * g;
        let n = self.weights.len();
        scratch.weights.resize(n, 0.0);
        scratch.accumulators.resize(n, [0.0; 2]);
        let (w, acc, nw, nacc) = (&self.weights, &self.accumulators, &mut scratch.weights, &mut scratch.accumulators);
        let mut finite = intercept.is_finite();
        match settings.optimizer {
            Optimizer::Sgd { learning_rate } => {
                for i in 0..n {
                    nw[i] = w[i] - learning_rate * grad(i, w[i]);
                    finite &= nw[i].is_finite();
                }
            }
            Optimizer::Ftrl { alpha, beta, l1, l2 } => {
                // As River: the weights first follow the accumulators, then the accumulators
                // take the gradient (taken at the weights as they were).
                for i in 0..n {
                    let gi = grad(i, w[i]);
                    let [z, q] = acc[i];
                    nw[i] = if z.abs() > l1 { -(((beta + q.sqrt()) / alpha + l2).powi(-1)) * (z - z.signum() * l1) } else { w[i] };
                    let s = ((q + gi * gi).sqrt() - q.sqrt()) / alpha;
                    nacc[i] = [z + gi - s * nw[i], q + gi * gi];
                    finite &= nw[i].is_finite() && nacc[i][0].is_finite() && nacc[i][1].is_finite();
                }
            }
            Optimizer::Adam { learning_rate, beta_1, beta_2, eps } => {
                let t = (self.steps + 1) as i32;
                let lr = learning_rate * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t));
                for i in 0..n {
                    let gi = grad(i, w[i]);
                    let [m, v] = acc[i];
                    let m = beta_1 * m + (1.0 - beta_1) * gi;
                    let v = beta_2 * v + (1.0 - beta_2) * gi * gi;
                    nacc[i] = [m, v];
                    nw[i] = w[i] - lr * m / (v.sqrt() + eps);
                    finite &= nw[i].is_finite() && v.is_finite();
                }
            }
            Optimizer::AdaGrad { learning_rate, eps } => {
                for i in 0..n {
                    let gi = grad(i, w[i]);
                    let g2 = acc[i][0] + gi * gi;
                    nacc[i] = [g2, 0.0];
                    nw[i] = w[i] - learning_rate / (g2 + eps).sqrt() * gi;
                    finite &= nw[i].is_finite() && g2.is_finite();
                }
            }
        }
        if !finite {
            return Err(Refused::NotFinite);
        }
        std::mem::swap(&mut self.weights, &mut scratch.weights);
        if !matches!(settings.optimizer, Optimizer::Sgd { .. }) {
            std::mem::swap(&mut self.accumulators, &mut scratch.accumulators);
        }
        self.intercept = intercept;
        self.steps += 1;
        self.version += 1;
        Ok(())
    }
}

/// The probability of `logit` and, with a label, the log loss's gradient with respect to the
/// logit: River's `sigmoid` and `Log.gradient`, sharing one `exp` where both compute one
/// (|logit| ≤ 18; beyond, River's own branches, which clip so nothing overflows).
#[inline]
pub fn probability_and_gradient(logit: f64, label: Option<bool>) -> (f64, f64) {
    if !(-18.0..=18.0).contains(&logit) {
        return (sigmoid(logit), label.map_or(0.0, |y| log_loss_gradient(y, logit)));
    }
    let e = (-logit).exp();
    let p = 1.0 / (1.0 + e);
    let g = match label {
        // -1 / (exp(z) + 1) = -e / (1 + e)
        Some(true) => -e / (1.0 + e),
        // 1 / (exp(-z) + 1): the probability itself
        Some(false) => p,
        None => 0.0,
    };
    (p, g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(optimizer: Optimizer) -> Settings {
        Settings { optimizer, intercept_learning_rate: 0.1, l2: 0.0, threshold: 0.5, batch_size: 1, track_loss: true }
    }

    #[test]
    fn sgd_step_is_the_textbook_update() {
        let s = settings(Optimizer::Sgd { learning_rate: 0.1 });
        let mut m = Model::zeros(2);
        let mut scratch = Model::default();
        let p = m.score(&s, &[1.0, 2.0], Some(true), &mut scratch).unwrap();
        assert_eq!(p, 0.5);
        // g = p - y = -0.5: w = 0 - 0.1 * (-0.5 * x), b = 0 - 0.1 * -0.5
        assert_eq!(m.weights, [0.05, 0.1]);
        assert_eq!(m.intercept, 0.05);
        let p2 = m.probability(&[1.0, 2.0]);
        assert!((p2 - 1.0 / (1.0 + (-0.3f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let s = settings(Optimizer::Sgd { learning_rate: 0.1 });
        let mut m = Model::zeros(1);
        m.weights[0] = 1e6;
        let mut scratch = Model::default();
        assert_eq!(m.score(&s, &[1.0], Some(false), &mut scratch).unwrap(), 1.0);
        assert!(m.weights[0].is_finite());
        assert!(log_loss(1.0, false).is_finite());
        for z in [-40.0, -18.5, -3.0, 0.0, 0.7, 17.9, 25.0, 31.0] {
            for y in [false, true] {
                let (p, g) = probability_and_gradient(z, Some(y));
                assert!((p - sigmoid(z)).abs() < 1e-15 && (g - log_loss_gradient(y, z)).abs() < 1e-15, "{z} {y}");
            }
        }
        assert_eq!(log_loss_gradient(false, 1e9), 1.0);
        assert_eq!(log_loss_gradient(true, 1e9), 0.0);
    }

    #[test]
    fn an_update_that_would_overflow_is_refused_and_undone() {
        let s = settings(Optimizer::Sgd { learning_rate: 1e300 });
        let mut m = Model::zeros(1);
        let mut scratch = Model::default();
        let before = m.clone();
        assert_eq!(m.score(&s, &[1e300], Some(true), &mut scratch), Err(Refused::NotFinite));
        assert_eq!(m, before);
        assert_eq!(m.learned, 0);
        assert_eq!(m.score(&s, &[1.0, 2.0], None, &mut scratch), Err(Refused::Dimension { expected: 1, got: 2 }));
    }

    #[test]
    fn a_mini_batch_steps_with_the_mean_gradient() {
        let mut s = settings(Optimizer::Sgd { learning_rate: 0.5 });
        s.batch_size = 2;
        let mut m = Model::zeros(1);
        let mut scratch = Model::default();
        m.score(&s, &[2.0], Some(true), &mut scratch).unwrap();
        assert_eq!(m.weights, [0.0], "no step before the batch is full");
        m.score(&s, &[4.0], Some(false), &mut scratch).unwrap();
        // gradients at w = 0: -0.5 * 2 and 0.5 * 4; mean 0.5 → w = -0.25; intercept: mean 0
        assert_eq!(m.weights, [-0.25]);
        assert_eq!(m.intercept, 0.0);
        assert_eq!(m.steps, 1);
    }

    #[test]
    fn optimizers_check_their_settings() {
        assert!(Optimizer::Sgd { learning_rate: 0.0 }.check().is_err());
        assert!(Optimizer::Adam { learning_rate: 0.1, beta_1: 1.0, beta_2: 0.9, eps: 1e-8 }.check().unwrap_err().contains("beta_1"));
        assert!(Optimizer::Ftrl { alpha: 0.05, beta: 1.0, l1: -1.0, l2: 1.0 }.check().unwrap_err().contains("l1"));
    }
}
