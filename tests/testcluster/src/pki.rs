//! The certificates and keys of one local control plane, made fresh for every cluster.
//!
//! One CA signs the API server's serving certificate and the admin client certificate (it is
//! also the `--client-ca-file`); a separate key pair signs ServiceAccount tokens.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{Error, IoContext, Result};

/// The first address of `--service-cluster-ip-range=10.0.0.0/24`: the `kubernetes` Service.
const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The user name in the admin client certificate.
pub(crate) const ADMIN_USER: &str = "testcluster-admin";

/// The group that RBAC lets do everything.
const ADMIN_GROUP: &str = "system:masters";

/// Where the certificate and key files of one cluster live.
#[derive(Debug, Clone)]
pub(crate) struct PkiFiles {
    /// CA certificate: trusts the API server, and is its `--client-ca-file`.
    pub ca_cert: PathBuf,
    /// API server serving certificate.
    pub serving_cert: PathBuf,
    /// API server serving key.
    pub serving_key: PathBuf,
    /// Admin client certificate (group `system:masters`).
    pub admin_cert: PathBuf,
    /// Admin client key.
    pub admin_key: PathBuf,
    /// ServiceAccount token signing key (private).
    pub service_account_key: PathBuf,
    /// ServiceAccount token verification key (public).
    pub service_account_pub: PathBuf,
}

impl PkiFiles {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_pub: dir.join("service-account.pub"),
        }
    }
}

/// PEM texts of everything a cluster needs.
#[derive(Debug)]
pub(crate) struct Pki {
    ca_cert: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    service_account_key: String,
    service_account_pub: String,
}

impl Pki {
    /// Makes a CA, a serving certificate for the loopback API server, an admin client
    /// certificate and a ServiceAccount signing key pair.
    pub fn generate() -> Result<Self> {
        let ca_key = key_pair("CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, "modelrollout-testcluster-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|source| certificate_error("CA certificate", source))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = key_pair("API server serving key")?;
        let mut serving_params = CertificateParams::default();
        serving_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving_params.subject_alt_names = serving_names()?;
        serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving_params.use_authority_key_identifier_extension = true;
        let serving_cert = serving_params
            .signed_by(&serving_key, &issuer)
            .map_err(|source| certificate_error("API server serving certificate", source))?;

        let admin_key = key_pair("admin client key")?;
        let mut admin_params = CertificateParams::default();
        admin_params.distinguished_name.push(DnType::CommonName, ADMIN_USER);
        admin_params.distinguished_name.push(DnType::OrganizationName, ADMIN_GROUP);
        admin_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin_params.use_authority_key_identifier_extension = true;
        let admin_cert = admin_params
            .signed_by(&admin_key, &issuer)
            .map_err(|source| certificate_error("admin client certificate", source))?;

        let service_account = key_pair("ServiceAccount signing key")?;

        Ok(Self {
            ca_cert: ca_cert.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_key: service_account.serialize_pem(),
            service_account_pub: service_account.public_key_pem(),
        })
    }

    /// Writes every file; keys are readable by the owner only.
    pub fn write(&self, files: &PkiFiles) -> Result<()> {
        write_file(&files.ca_cert, &self.ca_cert, false)?;
        write_file(&files.serving_cert, &self.serving_cert, false)?;
        write_file(&files.serving_key, &self.serving_key, true)?;
        write_file(&files.admin_cert, &self.admin_cert, false)?;
        write_file(&files.admin_key, &self.admin_key, true)?;
        write_file(&files.service_account_key, &self.service_account_key, true)?;
        write_file(&files.service_account_pub, &self.service_account_pub, false)
    }
}

/// Every name a client may use for the API server: loopback and the in-cluster Service.
fn serving_names() -> Result<Vec<SanType>> {
    let mut names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)),
    ];
    for dns in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        let name = dns
            .try_into()
            .map_err(|source| certificate_error("serving certificate name", source))?;
        names.push(SanType::DnsName(name));
    }
    Ok(names)
}

/// A fresh ECDSA P-256 key pair (fast to make; Go and rustls both accept it).
fn key_pair(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate().map_err(|source| certificate_error(what, source))
}

fn certificate_error(what: &'static str, source: rcgen::Error) -> Error {
    Error::Certificate { what, source }
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .context("writing", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file is PEM of the expected kind, and private keys are owner-only.
    #[test]
    fn writes_pem_files_with_private_keys_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let files = PkiFiles::in_dir(dir.path());
        Pki::generate().expect("generate").write(&files).expect("write");
        let cases = [
            (&files.ca_cert, "-----BEGIN CERTIFICATE-----", 0o644),
            (&files.serving_cert, "-----BEGIN CERTIFICATE-----", 0o644),
            (&files.serving_key, "-----BEGIN PRIVATE KEY-----", 0o600),
            (&files.admin_cert, "-----BEGIN CERTIFICATE-----", 0o644),
            (&files.admin_key, "-----BEGIN PRIVATE KEY-----", 0o600),
            (&files.service_account_key, "-----BEGIN PRIVATE KEY-----", 0o600),
            (&files.service_account_pub, "-----BEGIN PUBLIC KEY-----", 0o644),
        ];
        for (path, header, mode) in cases {
            let text = std::fs::read_to_string(path).expect("read");
            assert!(text.starts_with(header), "{}: {text}", path.display());
            let actual = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(actual, mode, "{}", path.display());
        }
    }

    /// Two clusters never share keys.
    #[test]
    fn every_cluster_gets_its_own_keys() {
        let first = Pki::generate().expect("generate");
        let second = Pki::generate().expect("generate");
        assert_ne!(first.ca_cert, second.ca_cert);
        assert_ne!(first.service_account_key, second.service_account_key);
    }
}
