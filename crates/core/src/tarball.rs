//! How hearth writes a tar entry in memory (code packages, image contexts): the same
//! bytes in, the same tar out, so digests of what hearth makes are stable.

/// Appends `data` at `path` (a directory when `path` ends in `/`) with `mode`, owned
/// by root, dated 1970: nothing of the host that wrote it leaks in.
pub fn append_entry(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(if path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_are_reproducible() {
        let make = || {
            let mut tar = tar::Builder::new(Vec::new());
            super::append_entry(&mut tar, "d/", 0o755, b"").unwrap();
            super::append_entry(&mut tar, "d/f", 0o644, b"x").unwrap();
            tar.into_inner().unwrap()
        };
        let bytes = make();
        assert_eq!(bytes, make());
        let mut archive = tar::Archive::new(bytes.as_slice());
        let kinds: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.header().entry_type(), e.header().mtime().unwrap())
            })
            .collect();
        assert_eq!(
            kinds,
            vec![(tar::EntryType::Directory, 0), (tar::EntryType::Regular, 0)]
        );
    }
}
