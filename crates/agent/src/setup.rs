//! Building the sandbox's file system: the native backend's private root (tmpfs, read-only
//! binds of the host's runtime dirs, a minimal `/dev` and `/etc`, pivot), or directories in
//! an existing root (a container, or tests).

use crate::code;
use crate::error::{check, AgentError, ConfigError};
use hearth_core::paths::CODE_DIR;
use hearth_core::protocol::DEPS_DIR;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Where the agent put things, as its runtime processes see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The unpacked code, the cwd of user processes.
    pub code: PathBuf,
    /// The runtimes' bootstrap files.
    pub runtime: PathBuf,
    /// The writable scratch dir (`TMPDIR`), emptied after every invocation.
    pub tmp: PathBuf,
    /// `HOME`: an empty dir the function cannot write (so no user site, no
    /// `~/.node_modules`, nothing planted for a later process).
    pub home: PathBuf,
    /// The per-invocation output dir (`$OUTPUT_DIR`), when the function has one.
    pub output: Option<PathBuf>,
    /// The version's dependency layer (read-only; empty or missing without one).
    pub deps: PathBuf,
}

impl Layout {
    /// `code`, `runtime` and `tmp` under `base`, no output dir.
    pub fn under(base: &Path) -> Self {
        Layout {
            code: base.join(CODE_DIR.trim_start_matches('/')),
            runtime: base.join("runtime"),
            tmp: base.join("tmp"),
            home: base.join("home"),
            output: None,
            deps: base.join(DEPS_DIR.trim_start_matches('/')),
        }
    }
}

/// Name of the output dir under the root (native) or the agent's base dir (Existing).
pub const OUTPUT_DIR_NAME: &str = "output";

/// Sizes and ids for the native root.
#[derive(Debug, Clone)]
pub struct NativeRoot<'a> {
    /// Empty host dir to mount the new root on.
    pub mount_point: &'a str,
    /// Host paths made visible read-only at the same place.
    pub read_only_dirs: &'a [String],
    /// The version's dependency layer on the host, made visible read-only at
    /// [`DEPS_DIR`].
    pub layer_dir: Option<&'a str>,
    /// Size of the root tmpfs, MB.
    pub root_size_mb: u64,
    /// Size of `/tmp`, MB.
    pub tmp_size_mb: u64,
    /// Size of `/output`, MB; 0: no output dir.
    pub output_size_mb: u64,
    /// Uid and gid of the function, for `/etc/passwd` and the owner of `/output`.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Uid and gid that unpack the code (`InitSpec::agent_id`, else the function's):
    /// the code dir and its files belong to it, never to root.
    pub unpacker_id: u32,
    /// A stem: `/code` is a tmpfs of its own of `root_size_mb`, owned by `unpacker_id`
    /// and left empty, for the code that comes at specialization (the root is sealed
    /// read-only before then, and the agent no longer root).
    pub stem: bool,
}

fn cstr(path: &Path) -> Result<CString, AgentError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ConfigError::NulInPath(path.to_path_buf()).into())
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), AgentError> {
    let c = |s: Option<&str>| s.map(|s| CString::new(s).unwrap_or_default());
    let (source_c, fstype_c, data_c) = (c(source), c(fstype), c(data));
    let target_c = cstr(target)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(&source_c),
            target_c.as_ptr(),
            ptr(&fstype_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    check(ret, || {
        format!(
            "mount {} on {} (flags {flags:#x}, {})",
            source.or(fstype).unwrap_or("-"),
            target.display(),
            data.unwrap_or("")
        )
    })?;
    Ok(())
}

/// Makes the mount at `target` read-only (plus `extra` flags), leaving the rest alone.
fn remount_readonly(target: &Path, extra: libc::c_ulong) -> Result<(), AgentError> {
    mount(
        None,
        target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | extra,
        None,
    )
}

/// Makes the bind at `target` and every mount below it read-only, nosuid and nodev
/// (`mount_setattr` with `AT_RECURSIVE`: a remount touches only the top mount, and a
/// host dir with a writable submount would stay writable inside).
fn seal_recursively(target: &Path) -> Result<(), AgentError> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c = cstr(target)?;
    // SAFETY: `c` is a NUL-terminated path and `attr` a mount_attr of the size passed;
    // both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret != 0 {
        return Err(AgentError::last_os(format!(
            "mount_setattr read-only {}",
            target.display()
        )));
    }
    Ok(())
}

/// Hides what runc hides of `/proc`: kernel memory, keys, timers and scheduler internals
/// (files: `/dev/null` bound over them), and makes the knobs read-only.
fn mask_proc() -> Result<(), AgentError> {
    for file in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/latency_stats",
        "/proc/timer_stats",
    ] {
        let path = Path::new(file);
        if path.exists() {
            mount(Some("/dev/null"), path, None, libc::MS_BIND, None)?;
        }
    }
    for dir in ["/proc/acpi", "/proc/scsi"] {
        let path = Path::new(dir);
        if path.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0"),
            )?;
        }
    }
    for knob in [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ] {
        let path = Path::new(knob);
        if path.exists() {
            mount(Some(knob), path, None, libc::MS_BIND | libc::MS_REC, None)?;
            remount_readonly(path, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC)?;
        }
    }
    Ok(())
}

/// Binds `target` onto itself and makes that read-only.
fn seal(target: &Path) -> Result<(), AgentError> {
    mount(
        Some(&target.to_string_lossy()),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    remount_readonly(target, libc::MS_NOSUID | libc::MS_NODEV)
}

fn mkdir(path: &Path, mode: u32) -> Result<(), AgentError> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(AgentError::at("mkdir", path, e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::at("chmod", path, e))
}

fn write_file(path: &Path, content: &str) -> Result<(), AgentError> {
    fs::write(path, content).map_err(|e| AgentError::at("write", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| AgentError::at("chmod", path, e))
}

/// Makes host path `dir` visible read-only at the same place under `root`: a symlink is
/// recreated (Debian's `/bin -> usr/bin`), a dir or file is bound and remounted
/// read-only, nosuid, nodev. A path missing on the host is skipped.
fn expose_read_only(root: &Path, dir: &str) -> Result<(), AgentError> {
    let host = Path::new(dir);
    let plain = host.is_absolute()
        && host
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(ConfigError::ReadOnlyDirPath(dir.to_string()).into());
    }
    let inside = root.join(host.strip_prefix("/").unwrap_or(host));
    if inside == root {
        return Err(ConfigError::ReadOnlyRoot.into());
    }
    let meta = match fs::symlink_metadata(host) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::diag!("read-only dir {dir} does not exist on the host; skipped");
            return Ok(());
        }
        Err(e) => return Err(AgentError::at("stat", host, e)),
    };
    if let Some(parent) = inside.parent() {
        fs::create_dir_all(parent).map_err(|e| AgentError::at("mkdir", parent, e))?;
    }
    if meta.file_type().is_symlink() {
        let target = fs::read_link(host).map_err(|e| AgentError::at("readlink", host, e))?;
        if inside.is_dir() {
            // An empty placeholder (e.g. the pre-made `usr`) gives way to the link.
            let _ = fs::remove_dir(&inside);
        }
        return symlink(&target, &inside).map_err(|e| AgentError::at("symlink", &inside, e));
    }
    if meta.is_dir() {
        mkdir(&inside, 0o755)?;
    } else {
        fs::write(&inside, b"").map_err(|e| AgentError::at("create", &inside, e))?;
    }
    mount(Some(dir), &inside, None, libc::MS_BIND | libc::MS_REC, None)?;
    seal_recursively(&inside)
}

/// Binds the version's dependency layer (a host directory the worker unpacked once,
/// owned by root, nothing else in it) read-only, nosuid, nodev at [`DEPS_DIR`].
fn bind_layer(root: &Path, layer: &str) -> Result<(), AgentError> {
    let host = Path::new(layer);
    let plain = host.is_absolute()
        && host
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let is_dir = fs::symlink_metadata(host).is_ok_and(|m| m.is_dir());
    if !plain || !is_dir {
        return Err(ConfigError::LayerPath(layer.to_string()).into());
    }
    let inside = root.join(DEPS_DIR.trim_start_matches('/'));
    mkdir(&inside, 0o755)?;
    mount(
        Some(layer),
        &inside,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    remount_readonly(&inside, libc::MS_NOSUID | libc::MS_NODEV)
}

/// A fresh `/dev`: a small tmpfs with the harmless character devices, links into
/// `/proc/self/fd` and a tiny `/dev/shm`. No host device node is bound.
fn make_dev(dev: &Path) -> Result<(), AgentError> {
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )?;
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        let path = dev.join(name);
        let c = cstr(&path)?;
        // SAFETY: `c` is a NUL-terminated path; makedev and mknod take plain integers.
        let ret =
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) };
        check(ret, || format!("mknod {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(|e| AgentError::at("chmod", &path, e))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(name);
        symlink(target, &path).map_err(|e| AgentError::at("symlink", &path, e))?;
    }
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("size=16m,mode=1777"),
    )
}

/// The minimal `/etc`: users, groups, hosts, name service config. Nothing from the host.
fn make_etc(etc: &Path, uid: u32, gid: u32) -> Result<(), AgentError> {
    let mut passwd = String::from(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    );
    let mut group = String::from("root:x:0:\nnogroup:x:65534:\n");
    if uid != 0 && uid != 65534 {
        passwd.push_str(&format!(
            "hearth:x:{uid}:{gid}:hearth:/tmp:/usr/sbin/nologin\n"
        ));
    }
    if gid != 0 && gid != 65534 {
        group.push_str(&format!("hearth:x:{gid}:\n"));
    }
    write_file(&etc.join("passwd"), &passwd)?;
    write_file(&etc.join("group"), &group)?;
    write_file(
        &etc.join("hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write_file(&etc.join("hostname"), "hearth\n")?;
    write_file(
        &etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n",
    )
}

/// Swaps the process's root for `root` and drops the old one.
fn pivot_into(root: &Path) -> Result<(), AgentError> {
    std::env::set_current_dir(root).map_err(|e| AgentError::at("chdir", root, e))?;
    // SAFETY: both arguments are the NUL-terminated literal ".".
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if ret != 0 {
        return Err(AgentError::last_os(format!(
            "pivot_root into {}",
            root.display()
        )));
    }
    // SAFETY: a NUL-terminated literal and a flag.
    let ret = unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) };
    check(ret, || "detach the old root".into())?;
    std::env::set_current_dir("/").map_err(|e| AgentError::at("chdir", Path::new("/"), e))
}

/// Builds the native sandbox's root and pivots into it. Runs as root in fresh mount, pid,
/// net, ipc and uts namespaces, as PID 1 of the pid namespace. Afterwards the only
/// writable places are `/tmp`, `/dev/shm` and `/output` (when asked for: a tmpfs of the
/// quota's size owned by the function's user, noexec); no host path is visible but the
/// read-only dirs.
pub fn native(root_spec: &NativeRoot<'_>, code_tar: &[u8]) -> Result<Layout, AgentError> {
    let root = Path::new(root_spec.mount_point);
    if !root.is_absolute() {
        return Err(ConfigError::RelativeMountPoint(root_spec.mount_point.to_string()).into());
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!(
            "size={}m,mode=0755",
            root_spec.root_size_mb.max(1)
        )),
    )?;
    for dir in ["usr", "proc", "dev", "tmp", "code", "runtime", "etc"] {
        mkdir(&root.join(dir), 0o755)?;
    }
    mkdir(&root.join("home"), 0o555)?;
    for dir in root_spec.read_only_dirs {
        expose_read_only(root, dir)?;
    }
    if let Some(layer) = root_spec.layer_dir {
        bind_layer(root, layer)?;
    }
    make_dev(&root.join("dev"))?;
    mount(
        Some("tmpfs"),
        &root.join("tmp"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!("size={}m,mode=1777", root_spec.tmp_size_mb.max(1))),
    )?;
    let output = (root_spec.output_size_mb > 0).then(|| Path::new("/").join(OUTPUT_DIR_NAME));
    if output.is_some() {
        let dir = root.join(OUTPUT_DIR_NAME);
        mkdir(&dir, 0o755)?;
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(&format!(
                "size={}m,nr_inodes={},mode=0755,uid={},gid={}",
                root_spec.output_size_mb,
                crate::output::MAX_ENTRIES,
                root_spec.uid,
                root_spec.gid
            )),
        )?;
    }
    if root_spec.stem {
        mount(
            Some("tmpfs"),
            &root.join("code"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&format!(
                "size={}m,mode=0755,uid={id},gid={id}",
                root_spec.root_size_mb.max(1),
                id = root_spec.unpacker_id
            )),
        )?;
    }
    make_etc(&root.join("etc"), root_spec.uid, root_spec.gid)?;
    code::write_runtime_files(&root.join("runtime"))?;
    pivot_into(root)?;
    let code_dir = Path::new(CODE_DIR);
    if !root_spec.stem {
        // The user's tar only now, with the host out of sight, by a process that left root.
        code::extract_as(code_tar, code_dir, root_spec.unpacker_id)?;
        seal(code_dir)?;
    }
    seal(Path::new("/runtime"))?;
    mount(
        Some("proc"),
        Path::new("/proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    mask_proc()?;
    let name = b"hearth";
    // SAFETY: `name` is valid for `name.len()` bytes.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check(ret, || "sethostname".into())?;
    remount_readonly(Path::new("/dev"), libc::MS_NOSUID | libc::MS_NOEXEC)?;
    remount_readonly(Path::new("/"), libc::MS_NOSUID | libc::MS_NODEV)?;
    Ok(Layout {
        output,
        ..Layout::under(Path::new("/"))
    })
}

/// Prepares `code`, `runtime`, `tmp` and (when `output` names its owner, the function's
/// uid and gid) `output` in an
/// existing root: under `$HEARTH_AGENT_ROOT` when set, else under `/` when writable,
/// else under a fresh temp dir. The code is unpacked only when the tar is not empty (a
/// container may carry it already). The output dir is used as it is when it exists (a
/// container may mount a sized tmpfs there); there is no tmpfs to size otherwise, and
/// the quota is enforced when the outputs are archived.
pub fn existing(code_tar: &[u8], output: Option<(u32, u32)>) -> Result<Layout, AgentError> {
    let layout = match std::env::var_os("HEARTH_AGENT_ROOT") {
        Some(base) => prepare(Path::new(&base), output)?,
        None => match prepare(Path::new("/"), output) {
            Ok(layout) => layout,
            Err(e) => {
                let base =
                    std::env::temp_dir().join(format!("hearth-agent-{}", std::process::id()));
                crate::diag!("cannot use /: {e}; using {}", base.display());
                prepare(&base, output)?
            }
        },
    };
    if !code_tar.is_empty() {
        code::extract(code_tar, &layout.code)?;
    }
    Ok(layout)
}

fn prepare(base: &Path, output: Option<(u32, u32)>) -> Result<Layout, AgentError> {
    let mut layout = Layout::under(base);
    fs::create_dir_all(&layout.code).map_err(|e| AgentError::at("mkdir", &layout.code, e))?;
    fs::create_dir_all(&layout.runtime).map_err(|e| AgentError::at("mkdir", &layout.runtime, e))?;
    code::write_runtime_files(&layout.runtime)?;
    if !layout.tmp.is_dir() {
        mkdir(&layout.tmp, 0o1777)?;
    }
    if !layout.home.is_dir() {
        mkdir(&layout.home, 0o555)?;
    }
    if let Some((uid, gid)) = output {
        let dir = base.join(OUTPUT_DIR_NAME);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(ConfigError::NotADirectory(dir).into()),
            Err(_) => mkdir(&dir, 0o755)?,
        }
        let owned = fs::symlink_metadata(&dir).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == uid && m.gid() == gid
        });
        // A container's root holds no CAP_CHOWN: its /output tmpfs is made with the owner.
        if crate::privileges::is_root() && !owned {
            let c = cstr(&dir)?;
            // SAFETY: `c` is a NUL-terminated path; lchown never follows a link.
            let ret = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
            check(ret, || format!("chown {}", dir.display()))?;
        }
        layout.output = Some(dir);
    }
    Ok(layout)
}
