//! The MIME type of a file judged from its first bytes, never from what the uploader declared:
//! the `allowed_mimetypes`/`blocked_mimetypes` policy must hold against a renamed executable.
//! The names are libmagic's (`file --mime-type`), which the reference content scanner reports,
//! so lists written for it work here; like it, an unknown binary file is
//! `application/octet-stream` and unknown text `text/plain`.

/// How many bytes of a file the MIME type is sniffed from (kept of every upload and scan).
pub const SNIFF_LEN: usize = 8192;

/// Magic numbers at the start of a file.
const PREFIXES: &[(&[u8], &str)] = &[
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\0", "image/tiff"),
    (b"MM\0*", "image/tiff"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\0", "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/x-rar"),
    (b"\x7fELF", "application/x-executable"),
    (b"MZ", "application/x-dosexec"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"\0asm", "application/wasm"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"\x1aE\xdf\xa3", "video/webm"),
    (b"{\\rtf", "text/rtf"),
    (b"#!", "text/x-shellscript"),
];

/// Sniffs `head`, the first bytes of a file (a few KiB).
pub fn sniff(head: &[u8]) -> &'static str {
    if head.is_empty() {
        return "application/x-empty";
    }
    for (magic, mime) in PREFIXES {
        if head.starts_with(magic) {
            return mime;
        }
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" {
        match &head[8..12] {
            b"WEBP" => return "image/webp",
            b"WAVE" => return "audio/x-wav",
            b"AVI " => return "video/x-msvideo",
            _ => {}
        }
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return match &head[8..12] {
            b"avif" => "image/avif",
            b"heic" | b"heix" => "image/heic",
            b"qt  " => "video/quicktime",
            _ => "video/mp4",
        };
    }
    if is_text(head) {
        let start = String::from_utf8_lossy(&head[..head.len().min(512)]).trim_start().to_ascii_lowercase();
        if start.starts_with("<!doctype html") || start.starts_with("<html") || start.starts_with("<head") {
            return "text/html";
        }
        if start.starts_with("<svg") || (start.starts_with("<?xml") && start.contains("<svg")) {
            return "image/svg+xml";
        }
        if start.starts_with("<?xml") {
            return "text/xml";
        }
        return "text/plain";
    }
    "application/octet-stream"
}

/// Text: UTF-8 (a character cut at the end of `head` allowed) without NUL or other control
/// characters than whitespace.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        Err(_) => return false,
    };
    valid.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n..."), "application/pdf");
        assert_eq!(sniff(b"MZ\x90\0\x03"), "application/x-dosexec");
        assert_eq!(sniff(b"\x7fELF\x02\x01"), "application/x-executable");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42"), "video/mp4");
        assert_eq!(sniff(b"  <!DOCTYPE html><p>"), "text/html");
        assert_eq!(sniff(b"<?xml version=\"1.0\"?><svg xmlns="), "image/svg+xml");
        assert_eq!(sniff("été\nhello".as_bytes()), "text/plain");
        assert_eq!(sniff(&"é".as_bytes()[..1]), "text/plain");
        assert_eq!(sniff(b"\0\x01\x02binary"), "application/octet-stream");
        assert_eq!(sniff(b""), "application/x-empty");
    }
}
