//! The container's seccomp profile: the allow-list of `hearth_core::seccomp` (the one the
//! agent installs itself) in the engine's profile format, so a container is filtered
//! from its first instruction, agent included, and not only once the agent has locked
//! itself down.

use hearth_core::seccomp::{self, ArgCheck};
use serde_json::{json, Value};

/// `ENOSYS`: what `clone3` returns, so that libc falls back to `clone`, whose flags the
/// filter can read.
const ENOSYS: i64 = 38;
/// `EPERM`: what every call off the list returns.
const EPERM: i64 = 1;

/// The profile as JSON, for `security_opt: ["seccomp=<json>"]`.
pub fn profile() -> Value {
    let allowed: Vec<&str> = seccomp::ALLOWED.iter().map(seccomp::name).collect();
    let mut rules = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    for conditional in seccomp::CONDITIONAL {
        for checks in conditional.when {
            let args: Vec<Value> = checks
                .iter()
                .map(|check| match *check {
                    ArgCheck::Eq { index, value } => {
                        json!({"index": index, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"})
                    }
                    ArgCheck::NoneOf { index, mask } => {
                        json!({"index": index, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"})
                    }
                })
                .collect();
            rules.push(json!({
                "names": [seccomp::name(&conditional.syscall)],
                "action": "SCMP_ACT_ALLOW",
                "args": args,
            }));
        }
    }
    rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules,
    })
}

/// The `security_opt` entry carrying [`profile`].
pub fn security_opt() -> String {
    format!("seccomp={}", profile())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_allows_the_list_and_nothing_else_by_default() {
        let profile = profile();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        let rules = profile["syscalls"].as_array().unwrap();
        let names = rules[0]["names"].as_array().unwrap();
        assert!(names.contains(&json!("read")));
        assert!(!names.contains(&json!("io_uring_setup")));
        let clone = rules.iter().find(|r| r["names"][0] == "clone").unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        assert!(security_opt().starts_with("seccomp={"));
    }
}
