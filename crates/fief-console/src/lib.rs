//! The operator and tenant consoles: a Vite + TypeScript front end (`web/`),
//! built by `scripts/console.sh` into `dist/` (committed, so `cargo build`
//! needs no node) and embedded here at compile time. Each listener serves
//! its own console's page and the shared assets; the pages call only their
//! listener's API with a credential kept in the page's memory.

use include_dir::{include_dir, Dir};

static DIST: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/dist");

/// Which console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// On the admin listener.
    Operator,
    /// On the data listener.
    Tenant,
}

/// A file to serve.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    /// Content-hashed (`assets/*`): cacheable for ever. The page is not.
    pub immutable: bool,
}

/// The console's page for `""`, a built asset for `assets/...`, nothing
/// else (the other console's page included).
pub fn asset(console: Console, path: &str) -> Option<Asset> {
    let file = match path {
        "" | "index.html" => match console {
            Console::Operator => "operator.html",
            Console::Tenant => "tenant.html",
        },
        p if p.starts_with("assets/") && !p.contains("..") => p,
        _ => return None,
    };
    let f = DIST.get_file(file)?;
    Some(Asset {
        bytes: f.contents(),
        content_type: content_type(file),
        immutable: file.starts_with("assets/"),
    })
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn each_console_serves_its_own_page_and_the_assets_it_names() {
        for (console, title) in [
            (Console::Operator, "operator console"),
            (Console::Tenant, "tenant console"),
        ] {
            let page = asset(console, "").unwrap();
            let html = std::str::from_utf8(page.bytes).unwrap();
            assert!(html.contains(title), "{html}");
            assert!(!page.immutable);
            // Every script and stylesheet the page names is served.
            for part in html.split("/console/").skip(1) {
                let name = part.split('"').next().unwrap();
                let a = asset(console, name).unwrap_or_else(|| panic!("{name} is not embedded"));
                assert!(a.immutable && !a.bytes.is_empty(), "{name}");
            }
        }
        for bad in [
            "operator.html",
            "tenant.html",
            "../Cargo.toml",
            "assets/../../Cargo.toml",
            "src/lib.rs",
            "assets/",
        ] {
            assert!(asset(Console::Tenant, bad).is_none(), "{bad}");
        }
    }
}
