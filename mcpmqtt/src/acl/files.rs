//! Keeping checked-in ACL files current, in the spirit of `TRYBUILD=overwrite`:
//! a test compares them with what the annotations produce now and fails when
//! one is stale. A file is rewritten only on request ([`OVERWRITE_ENV`]).

use std::fmt;
use std::path::{Path, PathBuf};

use super::{AclFormat, AclManifest};

/// Set to `overwrite` to rewrite stale ACL files instead of failing.
pub const OVERWRITE_ENV: &str = "MCPMQTT_ACL";

/// Checked-in ACL files that no longer match the annotations.
#[derive(Debug)]
pub struct StaleAclFiles {
    /// The stale or missing files.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for StaleAclFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "these ACL files do not match the tools' annotations:")?;
        for file in &self.files {
            writeln!(f, "  {}", file.display())?;
        }
        write!(f, "regenerate them with `{OVERWRITE_ENV}=overwrite cargo test`")
    }
}

impl std::error::Error for StaleAclFiles {}

/// Writes the manifest in every format into `dir`, one file each
/// ([`AclFormat::file_name`]), and returns their paths.
pub fn write_acl_files(manifest: &AclManifest, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    AclFormat::ALL
        .iter()
        .map(|format| {
            let path = dir.join(format.file_name());
            std::fs::write(&path, manifest.render(*format))?;
            Ok(path)
        })
        .collect()
}

/// Checks that `dir` holds the manifest in every format, as it renders now.
/// With `MCPMQTT_ACL=overwrite` in the environment, stale files are rewritten
/// instead. Call it from a test so a change to a tool's callers cannot land
/// without its ACL files.
///
/// ```no_run
/// # fn server() -> mcpmqtt::Server { unimplemented!() }
/// #[test]
/// fn acl_files_are_current() {
///     let manifest = server().acl_manifest();
///     mcpmqtt::acl::check_acl_files(&manifest, "examples/acl".as_ref()).unwrap();
/// }
/// ```
pub fn check_acl_files(manifest: &AclManifest, dir: &Path) -> Result<(), StaleAclFiles> {
    let overwrite = std::env::var(OVERWRITE_ENV).is_ok_and(|v| v == "overwrite");
    let mut stale = Vec::new();
    for format in AclFormat::ALL {
        let path = dir.join(format.file_name());
        let want = manifest.render(*format);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()) {
            continue;
        }
        if overwrite {
            if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &want)) {
                eprintln!("could not write {}: {e}", path.display());
                stale.push(path);
            }
        } else {
            stale.push(path);
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(StaleAclFiles { files: stale })
    }
}

/// The format asked for by `--emit-acl FORMAT` (or `--emit-acl=FORMAT`) in
/// `args`, if any. [`Server::run`](crate::Server::run) calls it with the
/// process's arguments, so every server gets the flag.
pub fn emit_acl_request<I, S>(args: I) -> Option<Result<AclFormat, String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.as_ref();
        if arg == "--emit-acl" {
            return Some(match args.next() {
                Some(value) => value
                    .as_ref()
                    .parse()
                    .map_err(|e: <AclFormat as std::str::FromStr>::Err| e.to_string()),
                None => Err(format!("--emit-acl needs a format: one of {}", format_names())),
            });
        }
        if let Some(value) = arg.strip_prefix("--emit-acl=") {
            return Some(
                value
                    .parse()
                    .map_err(|e: <AclFormat as std::str::FromStr>::Err| e.to_string()),
            );
        }
    }
    None
}

fn format_names() -> String {
    AclFormat::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_flag() {
        assert_eq!(emit_acl_request(["prog", "--broker", "x"]), None);
        assert_eq!(
            emit_acl_request(["prog", "--emit-acl", "manifest"]),
            Some(Ok(AclFormat::Manifest))
        );
        assert_eq!(
            emit_acl_request(["prog", "--emit-acl=manifest"]),
            Some(Ok(AclFormat::Manifest))
        );
        assert!(matches!(emit_acl_request(["prog", "--emit-acl"]), Some(Err(_))));
        assert!(matches!(emit_acl_request(["prog", "--emit-acl", "nope"]), Some(Err(_))));
    }
}
