//! Suites that run every case on both sandbox backends in one `cargo test`, whatever
//! `$HEARTH_TEST_SANDBOX` says (the compiled runtimes build differently on each: the
//! host's toolchains in a namespace, or a builder image's in a container).
//!
//! [`on_both_backends!`] turns `fn name(sandbox: &str)` test bodies into
//! `native::name` and `docker::name` tests, so `cargo test --test compiled docker`
//! picks one backend.

/// The sandbox backends, as `hearth up --sandbox` names them.
pub const BACKENDS: [&str; 2] = ["native", "docker"];

/// Makes a `#[test]` per backend (modules `native` and `docker`) of each named
/// `fn name(sandbox: &str)` in the calling file.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod native {
            $(
                #[test]
                fn $name() {
                    super::$name("native")
                }
            )+
        }
        mod docker {
            $(
                #[test]
                fn $name() {
                    super::$name("docker")
                }
            )+
        }
    };
}

/// Runs the docker CLI with `args` and returns its stdout, trimmed; panics with its
/// stderr when it fails (a test that needs the engine fails loudly without it).
pub fn docker_cli(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e} (is the engine installed?)"));
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
