//! The release agent must be a static binary: it runs inside sandboxes and images that
//! may have no (or another) C library, so it must not ask for an ELF interpreter.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::PathBuf;

const BUILD: &str = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
                     -p hearth-agent --target x86_64-unknown-linux-gnu --target-dir target/agent";

/// `$HEARTH_AGENT`, else where the build command above leaves the binary.
fn static_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("HEARTH_AGENT") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/agent/x86_64-unknown-linux-gnu/release/hearth-agent")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The `p_type` of every program header of a little-endian ELF64 file.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    let phoff = usize::try_from(u64_at(elf, 0x20)).unwrap();
    let phentsize = usize::from(u16_at(elf, 0x36));
    let phnum = usize::from(u16_at(elf, 0x38));
    (0..phnum)
        .map(|i| u32_at(elf, phoff + i * phentsize))
        .collect()
}

#[test]
fn the_release_agent_has_no_elf_interpreter() {
    const PT_INTERP: u32 = 3;
    let path = static_agent();
    let elf = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "static agent not found at {} ({e}); build it from the workspace root with\n  {BUILD}\n\
             or point HEARTH_AGENT at it",
            path.display()
        )
    });
    let types = program_header_types(&elf);
    assert!(!types.is_empty(), "no program headers");
    assert!(
        !types.contains(&PT_INTERP),
        "{} has a PT_INTERP header: it is dynamically linked; build it with\n  {BUILD}",
        path.display()
    );
}

#[test]
fn a_dynamic_binary_is_caught() {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read("/bin/sh").expect("/bin/sh");
    assert!(program_header_types(&elf).contains(&PT_INTERP));
}
