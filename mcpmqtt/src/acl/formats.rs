//! Renderers of the manifest, one per broker format. (Placeholder: being written.)

use super::AclManifest;

/// The formats the manifest can be rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclFormat {
    /// The neutral manifest, as JSON.
    Manifest,
}

pub(super) fn render(manifest: &AclManifest, format: AclFormat) -> String {
    match format {
        AclFormat::Manifest => serde_json::to_string_pretty(manifest).expect("a manifest serialises"),
    }
}
