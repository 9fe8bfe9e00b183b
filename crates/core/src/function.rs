//! A function's configuration: what a client sends, what a version stores, and the
//! rules both must satisfy.

use crate::runtime::{Runtime, UnknownRuntime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A numeric setting of a function: what it gets when its config does not say, and
/// the range accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value of a config that does not say.
    pub default: T,
    /// Smallest accepted.
    pub min: T,
    /// Largest accepted.
    pub max: T,
}

impl<T: Copy> Setting<T> {
    /// A setting of `default`, accepting `min..=max`.
    pub const fn new(default: T, min: T, max: T) -> Self {
        Setting { default, min, max }
    }
}

impl<T: PartialOrd + Copy> Setting<T> {
    /// Whether `value` is in range.
    pub fn accepts(&self, value: T) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// The config's value, else the previous version's, else the default.
    fn pick(&self, config: Option<T>, previous: Option<T>) -> T {
        config.or(previous).unwrap_or(self.default)
    }
}

/// `memory_mb`, up to Lambda's ceiling.
pub const MEMORY_MB: Setting<u64> = Setting::new(128, 64, 10_240);
/// `timeout_ms`, up to 15 minutes (as Lambda).
pub const TIMEOUT_MS: Setting<u64> = Setting::new(3_000, 1, 900_000);
/// `max_instances`: concurrent instances of one function.
pub const MAX_INSTANCES: Setting<u32> = Setting::new(10, 1, 100);
/// `output_quota_mb`: the size of `$OUTPUT_DIR`.
pub const OUTPUT_QUOTA_MB: Setting<u64> = Setting::new(1024, 1, 10_240);
/// Memory that buys one whole CPU when CPU follows memory (Lambda's figure).
pub const MB_PER_CPU: u64 = 1769;
/// Least CPU an instance gets when CPU follows memory: below it a small function's
/// interpreter start-up alone would take seconds.
pub const MIN_CPUS: f64 = 0.25;
/// Smallest explicit `cpus` accepted.
pub const MIN_EXPLICIT_CPUS: f64 = 0.05;
/// Largest explicit `cpus` accepted (a worker still caps it at its own cores).
pub const MAX_EXPLICIT_CPUS: f64 = 64.0;

/// Total size of a function's environment (names + values), as Lambda.
pub const MAX_ENV_BYTES: usize = 4 * 1024;
/// Longest description accepted.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

/// A function configuration that breaks a rule; the message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The name does not match `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[error("invalid function name {0:?}: use 1-63 lowercase letters, digits or '-', starting with a letter or digit")]
    InvalidName(String),
    /// The runtime is not one hearth knows.
    #[error("{0}")]
    UnknownRuntime(String),
    /// The runtime is known but not available in this build.
    #[error("runtime {0} is not supported by this hearth")]
    UnsupportedRuntime(Runtime),
    /// A create request without a runtime.
    #[error("config.runtime is required when creating a function: one of python, nodejs, cpp, go")]
    MissingRuntime,
    /// An update that tries to switch language.
    #[error("cannot change runtime from {from} to {to}: delete the function and create it again")]
    RuntimeChange {
        /// The runtime the function has.
        from: Runtime,
        /// The runtime the update asked for.
        to: Runtime,
    },
    /// Memory outside the accepted range.
    #[error("memory_mb {0} is out of range: use {min}..={max}", min = MEMORY_MB.min, max = MEMORY_MB.max)]
    MemoryOutOfRange(u64),
    /// Timeout outside the accepted range.
    #[error("timeout_ms {0} is out of range: use {min}..={max}", min = TIMEOUT_MS.min, max = TIMEOUT_MS.max)]
    TimeoutOutOfRange(u64),
    /// Instance maximum outside the accepted range.
    #[error("max_instances {0} is out of range: use {min}..={max}", min = MAX_INSTANCES.min, max = MAX_INSTANCES.max)]
    MaxInstancesOutOfRange(u32),
    /// Output quota outside the accepted range.
    #[error("output_quota_mb {0} is out of range: use {min}..={max}", min = OUTPUT_QUOTA_MB.min, max = OUTPUT_QUOTA_MB.max)]
    OutputQuotaOutOfRange(u64),
    /// An explicit CPU share outside the accepted range.
    #[error("cpus {} is out of range: use {MIN_EXPLICIT_CPUS}..={MAX_EXPLICIT_CPUS}, or leave it out so CPU follows memory_mb (one CPU per {MB_PER_CPU} MB)", .0.as_f64())]
    CpusOutOfRange(Cpus),
    /// An env var name that is not a portable identifier.
    #[error("invalid env var name {0:?}: use letters, digits and '_', not starting with a digit")]
    InvalidEnvName(String),
    /// An env var the platform owns.
    #[error("env var {name:?} is reserved by the platform ({why}): choose another name")]
    ReservedEnvName {
        /// The name the user set.
        name: String,
        /// Why the platform keeps it ([`crate::env::reserved_env_reason`]).
        why: &'static str,
    },
    /// An env var value with a NUL byte, which no process environment can hold.
    #[error("env var {0:?} contains a NUL byte")]
    EnvValueNul(String),
    /// The environment is too large.
    #[error("env is {0} bytes: the limit is {MAX_ENV_BYTES} bytes of names and values")]
    EnvTooLarge(usize),
    /// The description is too long.
    #[error("description is {0} characters: the limit is {MAX_DESCRIPTION_CHARS}")]
    DescriptionTooLong(usize),
    /// A handler that is not `module.function`, or on a runtime without one.
    #[error("invalid handler {0:?}: use module.function (e.g. app.lambda_handler, src/app.handler) on python or nodejs")]
    InvalidHandler(String),
}

impl From<UnknownRuntime> for SpecError {
    fn from(e: UnknownRuntime) -> Self {
        SpecError::UnknownRuntime(e.to_string())
    }
}

/// Checks a function name against `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidName(name.to_string()))
    }
}

/// The `config` part of a deploy request. Every field is optional: on create only
/// `runtime` is required; on update an omitted field keeps its value (and a client
/// serializing this leaves out the fields it does not set).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// `python`, `nodejs`, `cpp` or `go`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Memory limit of each instance, MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Wall-clock limit of one invocation, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Environment variables handed to the handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Free text shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Most instances serving this function at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Most bytes of output files one invocation may write, MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_quota_mb: Option<u64>,
    /// CPUs of each instance; when left out, CPU follows `memory_mb`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// The entry point as `module.function` (python, nodejs); the default is
    /// `main.handler` / `index.handler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}

/// The settings of one function version, validated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The function's runtime.
    pub runtime: Runtime,
    /// Memory limit of each instance, MB.
    pub memory_mb: u64,
    /// Wall-clock limit of one invocation, ms.
    pub timeout_ms: u64,
    /// User environment variables (never a reserved name).
    pub env: BTreeMap<String, String>,
    /// Free text.
    pub description: String,
    /// Most instances serving this function at once.
    pub max_instances: u32,
    /// Most bytes of output files one invocation may write, MB.
    #[serde(default = "default_output_quota_mb")]
    pub output_quota_mb: u64,
    /// The entry point as `module.function`, when not the runtime's default; the code
    /// package carries an entry file that routes to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// CPUs of each instance, when the function fixes them; `None`: CPU follows memory
    /// ([`FunctionSpec::cpus_on`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
}

/// A CPU share, kept in thousandths so that specs stay comparable (`Eq`); a plain
/// number (`0.5`) in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(u32);

impl Cpus {
    /// The share nearest to `cpus` (to a thousandth; negative and NaN are 0).
    pub fn from_f64(cpus: f64) -> Cpus {
        let milli = (cpus * 1000.0).round();
        Cpus(if milli.is_finite() && milli > 0.0 {
            milli.min(u32::MAX as f64) as u32
        } else {
            0
        })
    }

    /// The share as a number of CPUs.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl Serialize for Cpus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cpus, D::Error> {
        let cpus = f64::deserialize(deserializer)?;
        if !cpus.is_finite() || cpus < 0.0 {
            return Err(serde::de::Error::custom(format!(
                "cpus must be a positive number, not {cpus}"
            )));
        }
        Ok(Cpus::from_f64(cpus))
    }
}

/// The CPUs an instance with `memory_mb` gets when its function does not fix them: one
/// per [`MB_PER_CPU`] MB, at least [`MIN_CPUS`], at most the host's cores. So memory is
/// the one knob, and a larger size trades cost for speed, as on Lambda.
pub fn cpus_for_memory(memory_mb: u64, host_cores: usize) -> f64 {
    let host = host_cores.max(1) as f64;
    (memory_mb as f64 / MB_PER_CPU as f64)
        .max(MIN_CPUS)
        .min(host)
}

fn default_output_quota_mb() -> u64 {
    OUTPUT_QUOTA_MB.default
}

impl FunctionSpec {
    /// Applies `config` on top of `previous` (an update) or on the defaults (a create),
    /// then validates the result.
    pub fn resolve(
        previous: Option<&FunctionSpec>,
        config: &FunctionConfig,
    ) -> Result<FunctionSpec, SpecError> {
        let runtime = match (&config.runtime, previous) {
            (Some(name), prev) => {
                let runtime: Runtime = name.parse()?;
                if let Some(prev) = prev {
                    if prev.runtime != runtime {
                        return Err(SpecError::RuntimeChange {
                            from: prev.runtime,
                            to: runtime,
                        });
                    }
                }
                runtime
            }
            (None, Some(prev)) => prev.runtime,
            (None, None) => return Err(SpecError::MissingRuntime),
        };
        let spec = FunctionSpec {
            runtime,
            memory_mb: MEMORY_MB.pick(config.memory_mb, previous.map(|p| p.memory_mb)),
            timeout_ms: TIMEOUT_MS.pick(config.timeout_ms, previous.map(|p| p.timeout_ms)),
            env: config
                .env
                .clone()
                .or_else(|| previous.map(|p| p.env.clone()))
                .unwrap_or_default(),
            description: config
                .description
                .clone()
                .or_else(|| previous.map(|p| p.description.clone()))
                .unwrap_or_default(),
            max_instances: MAX_INSTANCES
                .pick(config.max_instances, previous.map(|p| p.max_instances)),
            output_quota_mb: OUTPUT_QUOTA_MB
                .pick(config.output_quota_mb, previous.map(|p| p.output_quota_mb)),
            handler: match &config.handler {
                Some(h) if h.is_empty() => None,
                Some(h) => Some(h.clone()),
                None => previous.and_then(|p| p.handler.clone()),
            },
            cpus: config.cpus.or(previous.and_then(|p| p.cpus)),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The CPUs an instance of this version gets on a host with `host_cores`: the
    /// function's own `cpus` (capped at the host), else [`cpus_for_memory`].
    pub fn cpus_on(&self, host_cores: usize) -> f64 {
        match self.cpus {
            Some(cpus) => cpus.as_f64().min(host_cores.max(1) as f64),
            None => cpus_for_memory(self.memory_mb, host_cores),
        }
    }

    /// Checks every rule a stored spec must satisfy.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !self.runtime.is_supported() {
            return Err(SpecError::UnsupportedRuntime(self.runtime));
        }
        if !MEMORY_MB.accepts(self.memory_mb) {
            return Err(SpecError::MemoryOutOfRange(self.memory_mb));
        }
        if !TIMEOUT_MS.accepts(self.timeout_ms) {
            return Err(SpecError::TimeoutOutOfRange(self.timeout_ms));
        }
        if !MAX_INSTANCES.accepts(self.max_instances) {
            return Err(SpecError::MaxInstancesOutOfRange(self.max_instances));
        }
        if !OUTPUT_QUOTA_MB.accepts(self.output_quota_mb) {
            return Err(SpecError::OutputQuotaOutOfRange(self.output_quota_mb));
        }
        if let Some(cpus) = self.cpus {
            if !(MIN_EXPLICIT_CPUS..=MAX_EXPLICIT_CPUS).contains(&cpus.as_f64()) {
                return Err(SpecError::CpusOutOfRange(cpus));
            }
        }
        validate_env(&self.env)?;
        if let Some(handler) = &self.handler {
            let compiled = matches!(self.runtime, Runtime::Cpp | Runtime::Go);
            if compiled || split_handler(handler).is_none() {
                return Err(SpecError::InvalidHandler(handler.clone()));
            }
        }
        let chars = self.description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(SpecError::DescriptionTooLong(chars));
        }
        Ok(())
    }
}

/// `module.function` split at its last dot, when both parts are plain: the module a
/// relative path of letters, digits, `_`, `-` and `/` (no `..`), the function an
/// identifier.
pub fn split_handler(handler: &str) -> Option<(&str, &str)> {
    let (module, function) = handler.rsplit_once('.')?;
    let ident = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let module_ok = !module.is_empty()
        && module.len() <= 128
        && module.split('/').all(|part| {
            !part.is_empty()
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    (module_ok && ident(function) && function.len() <= 128).then_some((module, function))
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    let mut total = 0;
    for (name, value) in env {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(SpecError::InvalidEnvName(name.clone()));
        }
        if let Some(why) = crate::env::reserved_env_reason(name) {
            return Err(SpecError::ReservedEnvName {
                name: name.clone(),
                why,
            });
        }
        if value.contains('\0') {
            return Err(SpecError::EnvValueNul(name.clone()));
        }
        total += name.len() + value.len();
    }
    if total > MAX_ENV_BYTES {
        return Err(SpecError::EnvTooLarge(total));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(runtime: &str) -> FunctionConfig {
        FunctionConfig {
            runtime: Some(runtime.into()),
            ..Default::default()
        }
    }

    #[test]
    fn handlers_are_module_dot_function() {
        assert_eq!(
            split_handler("app.lambda_handler"),
            Some(("app", "lambda_handler"))
        );
        assert_eq!(
            split_handler("src/app.handler"),
            Some(("src/app", "handler"))
        );
        for bad in [
            "handler", "app.", ".f", "../x.f", "a/../b.f", "/abs.f", "a.b-c", "a b.f",
        ] {
            assert_eq!(split_handler(bad), None, "{bad}");
        }
        let mut go = config("go");
        go.handler = Some("main.handler".into());
        assert!(FunctionSpec::resolve(None, &go).is_err());
        let mut py = config("python");
        py.handler = Some("app.lambda_handler".into());
        let v1 = FunctionSpec::resolve(None, &py).unwrap();
        let v2 = FunctionSpec::resolve(Some(&v1), &FunctionConfig::default()).unwrap();
        assert_eq!(v2.handler.as_deref(), Some("app.lambda_handler"));
    }

    #[test]
    fn names_follow_the_api_pattern() {
        for good in ["a", "hello", "hello-world-2", "0abc", &"a".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "Hello", "a_b", "a.b", "../x", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_needs_a_runtime_and_fills_defaults() {
        assert_eq!(
            FunctionSpec::resolve(None, &FunctionConfig::default()),
            Err(SpecError::MissingRuntime)
        );
        let spec = FunctionSpec::resolve(None, &config("python")).unwrap();
        assert_eq!(spec.memory_mb, MEMORY_MB.default);
        assert_eq!(spec.timeout_ms, TIMEOUT_MS.default);
        assert_eq!(spec.max_instances, MAX_INSTANCES.default);
    }

    #[test]
    fn update_keeps_omitted_fields_and_refuses_a_runtime_change() {
        let mut first = config("nodejs");
        first.memory_mb = Some(256);
        first.env = Some([("A".to_string(), "1".to_string())].into());
        let v1 = FunctionSpec::resolve(None, &first).unwrap();
        let update = FunctionConfig {
            timeout_ms: Some(5000),
            ..Default::default()
        };
        let v2 = FunctionSpec::resolve(Some(&v1), &update).unwrap();
        assert_eq!((v2.memory_mb, v2.timeout_ms), (256, 5000));
        assert_eq!(v2.env, v1.env);
        assert!(matches!(
            FunctionSpec::resolve(Some(&v1), &config("python")),
            Err(SpecError::RuntimeChange { .. })
        ));
    }

    #[test]
    fn cpu_follows_memory_within_a_floor_and_the_host() {
        assert_eq!(cpus_for_memory(1769, 8), 1.0);
        assert_eq!(cpus_for_memory(3538, 8), 2.0);
        assert_eq!(
            cpus_for_memory(10_240, 2),
            2.0,
            "never more than the host has"
        );
        assert_eq!(cpus_for_memory(64, 2), MIN_CPUS, "a floor for small sizes");
        assert!(cpus_for_memory(1024, 2) > cpus_for_memory(512, 2));
        let mut spec = FunctionSpec::resolve(None, &config("python")).unwrap();
        assert_eq!(spec.cpus_on(2), MIN_CPUS);
        spec.cpus = Some(Cpus::from_f64(1.5));
        assert_eq!(spec.cpus_on(4), 1.5);
        assert_eq!(spec.cpus_on(1), 1.0);
    }

    #[test]
    fn explicit_cpus_are_validated_and_kept_across_updates() {
        let c: FunctionConfig =
            serde_json::from_str(r#"{"runtime": "python", "cpus": 0.5}"#).unwrap();
        let v1 = FunctionSpec::resolve(None, &c).unwrap();
        assert_eq!(v1.cpus, Some(Cpus::from_f64(0.5)));
        let v2 = FunctionSpec::resolve(Some(&v1), &FunctionConfig::default()).unwrap();
        assert_eq!(v2.cpus, v1.cpus);
        let json = serde_json::to_value(&v2).unwrap();
        assert_eq!(json["cpus"], 0.5);
        let mut c = config("python");
        c.cpus = Some(Cpus::from_f64(0.001));
        assert!(matches!(
            FunctionSpec::resolve(None, &c),
            Err(SpecError::CpusOutOfRange(_))
        ));
        assert!(serde_json::from_str::<FunctionConfig>(r#"{"cpus": -1}"#).is_err());
    }

    #[test]
    fn limits_and_env_rules_are_enforced() {
        let mut c = config("python");
        c.memory_mb = Some(1);
        assert_eq!(
            FunctionSpec::resolve(None, &c),
            Err(SpecError::MemoryOutOfRange(1))
        );
        let mut c = config("python");
        c.timeout_ms = Some(0);
        assert!(FunctionSpec::resolve(None, &c).is_err());
        for reserved in ["HEARTH_ATTEMPT", "PATH", "OUTPUT_DIR", "LD_PRELOAD"] {
            let mut c = config("python");
            c.env = Some([(reserved.to_string(), "x".to_string())].into());
            let error = FunctionSpec::resolve(None, &c).map(|_| ()).unwrap_err();
            assert!(
                matches!(&error, SpecError::ReservedEnvName { name, .. } if name == reserved),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(reserved), "{message}");
        }
        let mut c = config("python");
        c.env = Some([("1X".to_string(), "x".to_string())].into());
        assert!(FunctionSpec::resolve(None, &c).is_err());
        assert!(matches!(
            FunctionSpec::resolve(None, &config("ruby")),
            Err(SpecError::UnknownRuntime(_))
        ));
    }
}
