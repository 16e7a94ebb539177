//! From Prometheus' answers to numbers: pure functions, so every case (empty, NaN, ±Inf,
//! several series, error bodies) is tested without a server.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_http_query::response::Data;
use serde::Deserialize;

use crate::{AnalysisError, MetricProblem, ProxyWeight};

/// The envelope of every `/api/v1/query` answer.
#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

/// Longest piece of a non-Prometheus body quoted in an error.
const BODY_EXCERPT: usize = 200;

/// Turns an HTTP answer to `query` into its data, or the error a user can act on.
/// `timeout` is the evaluation timeout that was asked for, quoted when Prometheus hits it.
pub fn response(
    address: &str,
    query: &str,
    status: u16,
    body: &str,
    timeout: Duration,
) -> Result<Data, AnalysisError> {
    let envelope = serde_json::from_str::<Envelope>(body);
    match envelope {
        Ok(Envelope { status: s, data: Some(data), .. }) if s == "success" => Ok(data),
        Ok(Envelope { status: s, error_type, error, .. }) if s == "error" => {
            let error_type = error_type.unwrap_or_default();
            let error = error.unwrap_or_default();
            match error_type.as_str() {
                // 400 and 422: the query itself is at fault.
                "bad_data" | "execution" => Err(AnalysisError::Query {
                    query: query.to_owned(),
                    detail: format!("Prometheus at {address} says {error_type}: {error}"),
                }),
                "timeout" => {
                    Err(AnalysisError::Timeout { address: address.to_owned(), after: timeout })
                }
                _ => Err(AnalysisError::Http {
                    address: address.to_owned(),
                    status,
                    detail: format!("{error_type}: {error}"),
                }),
            }
        }
        _ if !(200..300).contains(&status) => {
            Err(AnalysisError::Http { address: address.to_owned(), status, detail: excerpt(body) })
        }
        Ok(_) => Err(bad_response(address, query, "status success without data")),
        Err(err) => {
            Err(bad_response(address, query, &format!("not a Prometheus API answer: {err}")))
        }
    }
}

fn bad_response(address: &str, query: &str, detail: &str) -> AnalysisError {
    AnalysisError::BadResponse {
        address: address.to_owned(),
        query: query.to_owned(),
        detail: detail.to_owned(),
    }
}

/// The first line of a body, shortened, or a note that it was empty.
fn excerpt(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or("");
    if line.is_empty() {
        return "(empty body)".to_owned();
    }
    match line.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// The single values of an answer: one per series (or the scalar), or a range vector.
fn values(data: &Data) -> Result<Vec<f64>, MetricProblem> {
    match data {
        Data::Vector(series) => Ok(series.iter().map(|s| s.sample().value()).collect()),
        Data::Scalar(sample) => Ok(vec![sample.value()]),
        Data::Matrix(_) => Err(MetricProblem::RangeVector),
    }
}

/// A count (`sum(increase(...))`): no series means nothing was counted, so 0.
pub fn count(address: &str, query: &str, data: &Data) -> Result<f64, AnalysisError> {
    let values = values(data).map_err(|p| bad_response(address, query, &p.to_string()))?;
    let total: f64 = values.iter().sum();
    if total.is_finite() {
        Ok(total)
    } else {
        Err(bad_response(address, query, &format!("a count of {total}")))
    }
}

/// A quantile (`histogram_quantile`): no series, NaN (no observations) or ±Inf (only the
/// `+Inf` bucket moved) all mean "unknown".
pub fn quantile(data: &Data) -> Option<f64> {
    match values(data).ok()?.as_slice() {
        [value] if value.is_finite() => Some(*value),
        _ => None,
    }
}

/// A custom metric: exactly one finite value, or the problem.
pub fn custom(data: &Data) -> Result<f64, MetricProblem> {
    match values(data)?.as_slice() {
        [] => Err(MetricProblem::NoData),
        [value] if value.is_nan() => Err(MetricProblem::NotANumber),
        [value] if value.is_infinite() => Err(MetricProblem::Infinite),
        [value] => Ok(*value),
        several => Err(MetricProblem::MultipleSeries(several.len())),
    }
}

/// One [`ProxyWeight`] per series, named by its `instance` label; when two series share an
/// instance (scraped by two jobs) they are told apart as `job/instance`. Sorted by name.
pub fn proxy_weights(
    address: &str,
    query: &str,
    data: &Data,
) -> Result<Vec<ProxyWeight>, AnalysisError> {
    let Data::Vector(series) = data else {
        return Err(bad_response(address, query, "expected an instant vector"));
    };
    let label = |labels: &HashMap<String, String>, name: &str| {
        labels.get(name).cloned().unwrap_or_default()
    };
    let mut per_instance: HashMap<String, usize> = HashMap::new();
    for s in series {
        *per_instance.entry(label(s.metric(), "instance")).or_default() += 1;
    }
    let mut weights: Vec<ProxyWeight> = series
        .iter()
        .map(|s| {
            let instance = label(s.metric(), "instance");
            let instance = if per_instance[&instance] > 1 {
                format!("{}/{instance}", label(s.metric(), "job"))
            } else {
                instance
            };
            ProxyWeight { instance, weight: s.sample().value() }
        })
        .collect();
    weights.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "http://127.0.0.1:9090";
    const T: Duration = Duration::from_secs(5);

    /// A `success` answer whose result is the given JSON.
    fn ok(result_type: &str, result: &str) -> Data {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"{result_type}","result":{result}}}}}"#
        );
        response(ADDR, "q", 200, &body, T).expect("success answer")
    }

    fn vector(values: &[&str]) -> Data {
        let series: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    r#"{{"metric":{{"instance":"10.0.0.{i}:9464"}},"value":[1700000000.5,"{v}"]}}"#
                )
            })
            .collect();
        ok("vector", &format!("[{}]", series.join(",")))
    }

    /// Counts: empty is zero, one series is its value, several are summed.
    #[test]
    fn counts() {
        assert_eq!(count(ADDR, "q", &vector(&[])).unwrap(), 0.0);
        assert_eq!(count(ADDR, "q", &vector(&["12.5"])).unwrap(), 12.5);
        assert_eq!(count(ADDR, "q", &vector(&["1", "2"])).unwrap(), 3.0);
        assert_eq!(count(ADDR, "q", &ok("scalar", r#"[1700000000,"4"]"#)).unwrap(), 4.0);
        let nan = count(ADDR, "q", &vector(&["NaN"])).unwrap_err();
        assert_eq!(nan.metric_label(), "bad_response");
    }

    /// Quantiles: empty, NaN and ±Inf are unknown; a finite value is kept.
    #[test]
    fn quantiles() {
        assert_eq!(quantile(&vector(&[])), None);
        assert_eq!(quantile(&vector(&["NaN"])), None);
        assert_eq!(quantile(&vector(&["+Inf"])), None);
        assert_eq!(quantile(&vector(&["-Inf"])), None);
        assert_eq!(quantile(&vector(&["0.75"])), Some(0.75));
    }

    /// Custom metrics: each way of having no single finite value is its own problem.
    #[test]
    fn custom_values() {
        assert_eq!(custom(&vector(&["0.02"])), Ok(0.02));
        assert_eq!(custom(&ok("scalar", r#"[1700000000,"3"]"#)), Ok(3.0));
        assert_eq!(custom(&vector(&[])), Err(MetricProblem::NoData));
        assert_eq!(custom(&vector(&["NaN"])), Err(MetricProblem::NotANumber));
        assert_eq!(custom(&vector(&["+Inf"])), Err(MetricProblem::Infinite));
        assert_eq!(custom(&vector(&["-Inf"])), Err(MetricProblem::Infinite));
        assert_eq!(custom(&vector(&["1", "2", "3"])), Err(MetricProblem::MultipleSeries(3)));
        let matrix = ok("matrix", r#"[{"metric":{},"values":[[1700000000,"1"]]}]"#);
        assert_eq!(custom(&matrix), Err(MetricProblem::RangeVector));
    }

    /// Weights: one per instance, sorted; a shared instance is told apart by its job.
    #[test]
    fn weights_per_instance() {
        let data = ok(
            "vector",
            r#"[{"metric":{"instance":"b:1","job":"proxy"},"value":[1,"25"]},
                {"metric":{"instance":"a:1","job":"proxy"},"value":[1,"10"]},
                {"metric":{"instance":"a:1","job":"gateway"},"value":[1,"10"]}]"#,
        );
        let weights = proxy_weights(ADDR, "q", &data).unwrap();
        let names: Vec<(&str, f64)> =
            weights.iter().map(|w| (w.instance.as_str(), w.weight)).collect();
        assert_eq!(names, [("b:1", 25.0), ("gateway/a:1", 10.0), ("proxy/a:1", 10.0)]);
        assert!(proxy_weights(ADDR, "q", &vector(&[])).unwrap().is_empty());
    }

    /// A syntax error (400 bad_data) names the query, the address and Prometheus' words.
    #[test]
    fn rejected_query() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#;
        let err = response(ADDR, "sum(", 400, body, T).unwrap_err();
        assert_eq!(err.metric_label(), "query");
        let text = err.to_string();
        assert!(
            text.contains("`sum(`")
                && text.contains(ADDR)
                && text.contains("unclosed left parenthesis"),
            "{text}"
        );
    }

    /// Prometheus' own evaluation timeout is a timeout; other API errors keep their status.
    #[test]
    fn api_errors() {
        let body = r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#;
        assert!(matches!(
            response(ADDR, "q", 503, body, T),
            Err(AnalysisError::Timeout { after, .. }) if after == T
        ));
        let body = r#"{"status":"error","errorType":"unavailable","error":"TSDB not ready"}"#;
        assert!(matches!(
            response(ADDR, "q", 503, body, T),
            Err(AnalysisError::Http { status: 503, detail, .. }) if detail == "unavailable: TSDB not ready"
        ));
    }

    /// A proxy's HTML error page becomes an HTTP error quoting the start of the body.
    #[test]
    fn non_prometheus_error_bodies() {
        let err = response(ADDR, "q", 502, "<html>Bad Gateway</html>\nmore", T).unwrap_err();
        assert!(matches!(
            &err,
            AnalysisError::Http { status: 502, detail, .. } if detail == "<html>Bad Gateway</html>"
        ));
        let err = response(ADDR, "q", 404, "", T).unwrap_err();
        assert!(err.to_string().contains("HTTP 404: (empty body)"), "{err}");
        let long = "x".repeat(500);
        let AnalysisError::Http { detail, .. } = response(ADDR, "q", 500, &long, T).unwrap_err()
        else {
            panic!("expected an HTTP error");
        };
        assert_eq!(detail.len(), BODY_EXCERPT + 3);
    }

    /// A 200 that is not a Prometheus answer is a bad response, not data.
    #[test]
    fn success_status_without_an_answer() {
        let err = response(ADDR, "q", 200, "hello", T).unwrap_err();
        assert_eq!(err.metric_label(), "bad_response");
        let err = response(ADDR, "q", 200, r#"{"status":"success"}"#, T).unwrap_err();
        assert_eq!(err.metric_label(), "bad_response");
    }
}
