//! `acl`: renders ACL manifests in a broker's format.

use std::io::Read as _;
use std::path::Path;

use mcpmqtt::acl::{AclFormat, AclManifest};

use crate::exit::Failure;

/// Reads each manifest (`-` is stdin), merges them, renders the result.
pub fn render(format: AclFormat, manifests: &[impl AsRef<Path>]) -> Result<String, Failure> {
    let mut merged: Option<AclManifest> = None;
    for path in manifests {
        let path = path.as_ref();
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::Usage(format!("could not read a manifest from stdin: {e}")))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("could not read the manifest {}: {e}", path.display())))?
        };
        let manifest = AclManifest::from_json(&text).map_err(|e| {
            Failure::Usage(format!(
                "{} is not an ACL manifest ({e}); write one with `--emit-acl manifest`",
                path.display()
            ))
        })?;
        if let Some(first) = &merged {
            if first.namespace != manifest.namespace {
                return Err(Failure::Usage(format!(
                    "{} is for namespace {:?}, the others for {:?}: one ACL covers one namespace",
                    path.display(),
                    manifest.namespace,
                    first.namespace
                )));
            }
        }
        merged = Some(match merged {
            None => manifest,
            Some(m) => m.merge(manifest),
        });
    }
    let manifest = merged.ok_or_else(|| Failure::Usage("no manifest given".into()))?;
    Ok(manifest.render(format))
}
