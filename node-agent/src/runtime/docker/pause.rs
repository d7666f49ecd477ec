//! The sandbox's image: the static pause binary built by `build.rs` (from `pause/pause.rs`),
//! embedded here and turned into `rudder/pause:<hash of the binary>` through the engine's
//! build API the first time a sandbox needs it, so nothing is ever pulled for it.

/// The pause binary, static, for the engine's architecture (the agent's own).
static PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

const PAUSE_IMAGE: &str = concat!("rudder/pause:", env!("RUDDER_PAUSE_HASH"));

const DOCKERFILE: &str = "FROM scratch\nCOPY pause /pause\nENTRYPOINT [\"/pause\"]\n";

/// The sandbox image's name; its tag changes whenever the pause binary does.
pub fn pause_image() -> &'static str {
    PAUSE_IMAGE
}

/// The build context: a tar of the Dockerfile and the binary.
pub(super) fn build_context() -> Vec<u8> {
    let mut tar = Vec::with_capacity(PAUSE_BINARY.len() + 4 * 512);
    tar_entry(&mut tar, "Dockerfile", 0o644, DOCKERFILE.as_bytes());
    tar_entry(&mut tar, "pause", 0o755, PAUSE_BINARY);
    // End of archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// One regular file in ustar format (name under 100 bytes).
fn tar_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let mut h = [0u8; 512];
    let mut put = |at: usize, field: &[u8]| h[at..at + field.len()].copy_from_slice(field);
    put(0, name.as_bytes());
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, b"0000000\0"); // uid
    put(116, b"0000000\0"); // gid
    put(124, format!("{:011o}\0", data.len()).as_bytes());
    put(136, b"00000000000\0"); // mtime: fixed, so the context (and the build cache) is stable
    put(148, b"        "); // checksum, counted as spaces
    put(156, b"0"); // regular file
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_a_static_elf_and_the_tag_names_it() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        assert!(pause_image().starts_with("rudder/pause:"));
        assert!(pause_image().len() > "rudder/pause:".len());
    }

    #[test]
    fn the_context_is_a_well_formed_tar() {
        let tar = build_context();
        assert_eq!(tar.len() % 512, 0);
        assert_eq!(&tar[..10], b"Dockerfile");
        assert_eq!(&tar[257..263], b"ustar\0");
        // Checksum of the first header, as a reader verifies it.
        let mut h = tar[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap_or_default(), 8);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(stored, Ok(sum));
        // The second entry starts after the Dockerfile's padded content.
        let second = 512 + DOCKERFILE.len().div_ceil(512) * 512;
        assert_eq!(&tar[second..second + 5], b"pause");
        assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));
    }
}
