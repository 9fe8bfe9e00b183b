//! Where the cgroup hierarchies are: `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Pure parsing; the caller reads the files (from a `/proc` root it was given, so tests
//! use fixture trees).

use std::path::{Path, PathBuf};

/// One line of `/proc/<pid>/mountinfo` (only the fields we use).
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    /// The part of the file system mounted (`/` for a whole cgroup hierarchy).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `cgroup`, `cgroup2`, `tmpfs`, …
    pub fstype: String,
    /// Per-superblock options; for cgroup v1 these name the controllers.
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether this is a cgroup v1 hierarchy carrying `controller`.
    pub fn is_v1_with(&self, controller: &str) -> bool {
        self.fstype == "cgroup" && self.super_options.iter().any(|o| o == controller)
    }
}

/// Parses a mountinfo file; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional...] - fstype source super
    let mut fields = line.split(' ');
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    let mut rest = fields.skip(1).skip_while(|f| *f != "-");
    rest.next()?; // the "-" separator
    let fstype = rest.next()?;
    let _source = rest.next()?;
    let super_options = rest.next().unwrap_or("");
    Some(MountEntry {
        root: PathBuf::from(unescape(root)),
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: fstype.to_string(),
        super_options: super_options.split(',').map(str::to_string).collect(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|b| (b'0'..=b'7').contains(b))
                .then(|| (d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'))
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    /// Controllers of the hierarchy (empty for the v2 unified one, `name=…` for named).
    pub controllers: Vec<String>,
    /// The process's cgroup, relative to the hierarchy's root.
    pub path: String,
}

/// Parses a `/proc/<pid>/cgroup` file; malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory of cgroup `path` (as `/proc/<pid>/cgroup` names it) under a mount of
/// its hierarchy whose root is `mount_root`. A path outside the mounted part (a
/// cgroup namespace boundary) maps to the mount point itself.
pub fn cgroup_dir(mount: &MountEntry, path: &str) -> PathBuf {
    let path = Path::new(path);
    match path.strip_prefix(&mount.root) {
        Ok(relative) => mount.mount_point.join(relative),
        Err(_) => mount.mount_point.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 /docker/abc /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 27 0:39 / /mnt/with\\040space rw - tmpfs none rw
garbage line
";

    #[test]
    fn mountinfo_names_controllers_and_unescapes_paths() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 7);
        let cpu = mounts.iter().find(|m| m.is_v1_with("cpuacct")).unwrap();
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(cpu.is_v1_with("cpu"));
        assert!(!cpu.is_v1_with("memory"));
        let unified = mounts.iter().find(|m| m.fstype == "cgroup2").unwrap();
        assert_eq!(unified.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mounts[6].mount_point, Path::new("/mnt/with space"));
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
    }

    #[test]
    fn proc_cgroup_maps_to_directories_under_the_mount_root() {
        let members = parse_proc_cgroup(
            "9:name=systemd:/\n4:memory:/session/x\n2:cpu,cpuacct:/\n8:pids:/docker/abc/inner\n0::/\n",
        );
        assert_eq!(members.len(), 5);
        assert_eq!(members[2].controllers, vec!["cpu", "cpuacct"]);
        assert!(members[4].controllers.is_empty());
        let mounts = parse_mountinfo(HYBRID);
        let memory = mounts.iter().find(|m| m.is_v1_with("memory")).unwrap();
        assert_eq!(
            cgroup_dir(memory, &members[1].path),
            Path::new("/sys/fs/cgroup/memory/session/x")
        );
        let pids = mounts.iter().find(|m| m.is_v1_with("pids")).unwrap();
        assert_eq!(
            cgroup_dir(pids, &members[3].path),
            Path::new("/sys/fs/cgroup/pids/inner")
        );
        assert_eq!(
            cgroup_dir(pids, "/elsewhere"),
            Path::new("/sys/fs/cgroup/pids")
        );
    }
}
