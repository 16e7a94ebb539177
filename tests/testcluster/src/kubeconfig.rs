//! The admin kubeconfig of a local control plane.

use serde_json::json;

use crate::pki::{ADMIN_USER, PkiFiles};
use crate::{Result, utf8};

/// The cluster and context name in the kubeconfig.
pub(crate) const CONTEXT: &str = "testcluster";

/// A kubeconfig whose only context talks to `server` as the `system:masters` admin,
/// referring to the certificate files by absolute path.
pub(crate) fn admin_kubeconfig(server: &str, files: &PkiFiles) -> Result<String> {
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": {
                "server": server,
                "certificate-authority": utf8(&files.ca_cert)?,
            },
        }],
        "users": [{
            "name": ADMIN_USER,
            "user": {
                "client-certificate": utf8(&files.admin_cert)?,
                "client-key": utf8(&files.admin_key)?,
            },
        }],
        "contexts": [{
            "name": CONTEXT,
            "context": {"cluster": CONTEXT, "user": ADMIN_USER, "namespace": "default"},
        }],
        "current-context": CONTEXT,
        "preferences": {},
    });
    // A JSON value always serialises to YAML; JSON is valid YAML should that ever change.
    Ok(serde_yaml::to_string(&document).unwrap_or_else(|_| document.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubeconfig parses with kube's own loader and names the server and the admin files.
    #[test]
    fn kube_reads_the_admin_kubeconfig() {
        let files = PkiFiles::in_dir(std::path::Path::new("/run/cluster"));
        let text = admin_kubeconfig("https://127.0.0.1:6443", &files).expect("render");
        let config = kube::config::Kubeconfig::from_yaml(&text).expect("kube parses it");
        assert_eq!(config.current_context.as_deref(), Some(CONTEXT));
        let cluster = config.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority.as_deref(), Some("/run/cluster/ca.crt"));
        let user = config.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.client_certificate.as_deref(), Some("/run/cluster/admin.crt"));
    }
}
