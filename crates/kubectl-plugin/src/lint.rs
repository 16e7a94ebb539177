//! `lint FILE...`: checks ModelRollout manifests offline with the rules the API server and the
//! controller apply: the CRD schema's fields (unknown fields are rejected, as `kubectl apply`
//! does with strict field validation), the types, and `ModelRollout::validate()`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use modelrollout_api::ModelRollout;
use serde::Deserialize;
use serde_json::Value;

const API_VERSION: &str = "rollouts.modelops.io/v1alpha1";
const KIND: &str = "ModelRollout";

/// One problem in one document of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintProblem {
    /// Where: `file`, `file (document 2)` or `file: ModelRollout ai/chat`.
    pub location: String,
    /// The field path, e.g. `spec.strategy.steps[2].setWeight`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for LintProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.field, self.message)
    }
}

/// What linting one file found.
#[derive(Debug, Default)]
pub struct LintReport {
    /// ModelRollouts checked.
    pub checked: usize,
    /// Documents of other kinds, left alone.
    pub skipped: usize,
    /// Every problem, in document and field order.
    pub problems: Vec<LintProblem>,
}

/// Lints every YAML document in `text` (a file named `file`).
pub fn lint_text(file: &str, text: &str) -> LintReport {
    let mut report = LintReport::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location =
            if index == 0 { file.to_owned() } else { format!("{file} (document {})", index + 1) };
        let problem = |field: &str, message: String| LintProblem {
            location: location.clone(),
            field: field.to_owned(),
            message,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(err) => {
                report.problems.push(problem("(yaml)", format!("not valid YAML: {err}")));
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        };
        let value = match serde_json::to_value(&value) {
            Ok(value) => value,
            Err(err) => {
                report
                    .problems
                    .push(problem("(yaml)", format!("not a JSON-compatible object: {err}")));
                continue;
            }
        };
        if value.get("kind").and_then(Value::as_str) != Some(KIND) {
            report.skipped += 1;
            continue;
        }
        report.checked += 1;
        let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>");
        let location = format!("{location}: ModelRollout {name}");
        let problems = lint_document(&value);
        report.problems.extend(problems.into_iter().map(|(field, message)| LintProblem {
            location: location.clone(),
            field,
            message,
        }));
    }
    report
}

/// The problems of one ModelRollout document, as (field path, message).
fn lint_document(value: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != API_VERSION {
        problems.push((
            "apiVersion".to_owned(),
            format!("is {api_version:?}: write apiVersion: {API_VERSION}"),
        ));
    }
    if value.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty) {
        problems
            .push(("metadata.name".to_owned(), "is missing: give the rollout a name".to_owned()));
    }
    let crd = modelrollout_api::crd();
    let schema =
        crd.spec.versions.first().and_then(|v| v.schema.as_ref()?.open_api_v3_schema.clone());
    if let (Some(schema), Some(spec)) =
        (schema.as_ref().and_then(|s| s.properties.as_ref()?.get("spec")), value.get("spec"))
    {
        unknown_fields("spec", spec, schema, &mut problems);
    }
    if value.get("status").is_some() {
        problems.push((
            "status".to_owned(),
            "is written by the controller and ignored by kubectl apply: remove it".to_owned(),
        ));
    }
    if !problems.is_empty() {
        return problems;
    }
    let rollout: ModelRollout = match serde_path_to_error::deserialize(value) {
        Ok(rollout) => rollout,
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." { "spec".to_owned() } else { path };
            problems.push((field, err.into_inner().to_string()));
            return problems;
        }
    };
    if let Err(invalid) = rollout.validate() {
        problems.extend(
            invalid.problems.into_iter().map(|p| (p.field, format!("is {}: {}", p.value, p.fix))),
        );
    }
    problems
}

/// Fields the schema does not know, as the API server's strict field validation reports them.
fn unknown_fields(
    path: &str,
    value: &Value,
    schema: &JSONSchemaProps,
    problems: &mut Vec<(String, String)>,
) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let Some(properties) = schema.properties.as_ref() else {
                // A map (additionalProperties) or a free-form object: every key is allowed.
                if let Some(JSONSchemaPropsOrBool::Schema(item)) = &schema.additional_properties {
                    for (key, child) in fields {
                        unknown_fields(&format!("{path}.{key}"), child, item, problems);
                    }
                }
                return;
            };
            for (key, child) in fields {
                let child_path = format!("{path}.{key}");
                match properties.get(key) {
                    Some(child_schema) => {
                        unknown_fields(&child_path, child, child_schema, problems)
                    }
                    None => problems.push((
                        child_path,
                        format!(
                            "unknown field {key:?}: the fields of {path} are {}",
                            properties.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )),
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, child) in items.iter().enumerate() {
                    unknown_fields(&format!("{path}[{i}]"), child, item, problems);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = include_str!("fixtures/progressing.yaml");

    fn spec_only(text: &str) -> String {
        // The fixture with its status removed: what a user applies.
        text.split("\nstatus:").next().unwrap().to_owned()
    }

    fn lint_edited(from: &str, to: &str) -> Vec<String> {
        let text = spec_only(VALID).replacen(from, to, 1);
        assert_ne!(text, spec_only(VALID), "edit {from:?} applies");
        lint_text("r.yaml", &text).problems.iter().map(ToString::to_string).collect()
    }

    /// A valid manifest has no problems; other kinds in the same file are skipped.
    #[test]
    fn valid_manifest_passes() {
        let text = format!(
            "{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n",
            spec_only(VALID)
        );
        let report = lint_text("r.yaml", &text);
        assert_eq!(report.problems, []);
        assert_eq!((report.checked, report.skipped), (1, 1));
    }

    /// Each broken rule is reported with its field path and a fix (table: edit, expected line).
    #[test]
    fn problems_name_the_field() {
        let table = [
            (
                "setWeight: 25",
                "setWeight: 2",
                "r.yaml: ModelRollout chat-assistant: spec.strategy.steps[2].setWeight: is 2: must not be below",
            ),
            (
                "interval: 60s",
                "interval: 60sec",
                "r.yaml: ModelRollout chat-assistant: spec.analysis.interval: ",
            ),
            (
                "maxErrorRate: 0.05",
                "maxErrorRate: 1.5",
                "r.yaml: ModelRollout chat-assistant: spec.analysis.thresholds.maxErrorRate: is 1.5",
            ),
            (
                "model: chat-default",
                "model: chat-default\n  replicas: 3",
                "r.yaml: ModelRollout chat-assistant: spec.replicas: unknown field \"replicas\"",
            ),
            (
                "setWeight: 5\n",
                "setWeight: 5\n        weight: 5\n",
                "spec.strategy.steps[0].weight: unknown field",
            ),
            ("endpoint: \"http://relay", "endpoint: \"ftp://relay", "spec.canary.endpoint"),
            (
                "apiVersion: rollouts.modelops.io/v1alpha1",
                "apiVersion: rollouts.modelops.io/v1",
                "apiVersion: is \"rollouts.modelops.io/v1\"",
            ),
        ];
        for (from, to, expected) in table {
            let problems = lint_edited(from, to);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{to:?}: expected a line containing {expected:?}, got {problems:#?}"
            );
        }
    }

    /// Broken YAML is one problem naming the file, not a panic.
    #[test]
    fn yaml_syntax_error() {
        let report = lint_text("bad.yaml", "kind: ModelRollout\nspec: [unclosed\n");
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].to_string().starts_with("bad.yaml: (yaml): not valid YAML"));
    }
}
