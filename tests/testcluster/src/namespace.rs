//! A fresh namespace per test, so tests on one shared cluster can run in parallel.

use std::ffi::OsStr;
use std::process::Output;

use rand::distr::{Alphanumeric, SampleString};

use crate::Result;
use crate::cluster::TestCluster;
use crate::log::log;

/// A namespace with a random name, created on a [`TestCluster`] and deleted on drop.
///
/// The local control plane runs no kube-controller-manager, so a deleted namespace stays
/// `Terminating` until the cluster stops; its name is never reused.
#[derive(Debug)]
pub struct TestNamespace<'c> {
    name: String,
    cluster: &'c TestCluster,
}

impl<'c> TestNamespace<'c> {
    /// Creates `test-<8 random lowercase letters and digits>`.
    pub(crate) fn create(cluster: &'c TestCluster) -> Result<Self> {
        let suffix = Alphanumeric.sample_string(&mut rand::rng(), 8).to_ascii_lowercase();
        let name = format!("test-{suffix}");
        cluster.kubectl_ok(["create", "namespace", name.as_str()])?;
        Ok(Self { name, cluster })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives in.
    pub fn cluster(&self) -> &'c TestCluster {
        self.cluster
    }

    /// Runs the pinned `kubectl --namespace <this>` with `args`.
    pub fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cluster.kubectl(self.namespaced(args).iter().map(|a| a.as_os_str()))
    }

    /// Like [`TestNamespace::kubectl`], with `input` on stdin (for `apply -f -`).
    pub fn kubectl_with_stdin<I, S>(&self, args: I, input: &[u8]) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cluster.kubectl_with_stdin(self.namespaced(args).iter().map(|a| a.as_os_str()), input)
    }

    /// Runs `kubectl --namespace <this>` and returns stdout, or [`crate::Error::Kubectl`].
    pub fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = self.namespaced(args);
        let output = self.cluster.kubectl(&args)?;
        crate::cluster::expect_success(&args, output)
    }

    fn namespaced<I, S>(&self, args: I) -> Vec<std::ffi::OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ["--namespace", self.name.as_str()]
            .into_iter()
            .map(Into::into)
            .chain(args.into_iter().map(|a| a.as_ref().to_os_string()))
            .collect()
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        let deleted = self.cluster.kubectl_ok([
            "delete",
            "namespace",
            self.name.as_str(),
            "--wait=false",
            "--ignore-not-found",
        ]);
        if let Err(err) = deleted {
            log!("deleting namespace {}: {err}", self.name);
        }
    }
}
