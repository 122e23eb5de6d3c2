//! Request logs: every line a request causes carries its `x-openstack-request-id`, so the id a client
//! reports finds the failure. Logs are captured with the service's own format ([`log_subscriber`]),
//! scoped to the test's thread (tokio's test runtime runs on it).

use harness::*;
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex};
use zaqar::app::{log_filter, log_subscriber};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// The lines written so far, without terminal colours.
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|&c| c == 'm');
            } else {
                plain.push(c);
            }
        }
        plain.lines().map(str::to_string).collect()
    }
}

#[tokio::test]
async fn a_503_is_logged_with_its_request_id_on_every_line() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(log_subscriber(false, log_filter("info").unwrap(), logs.clone()));
    let app = app_without_storage().await;
    let c = Client::new(&app);
    let r = c.get("/v2/queues/q1/stats").await;
    assert_eq!(r.status, 503);
    let id = r.header_value("x-openstack-request-id").unwrap().to_string();
    let lines = logs.lines();
    let warning = lines.iter().find(|l| l.contains(" WARN ")).expect("a 5xx warning");
    assert!(warning.contains("request failed") && warning.contains(&id), "{warning}");
    assert!(warning.contains("status=503"), "{warning}");
    assert!(warning.contains("route=/v2/queues/{queue_name}/stats"), "{warning}");
    assert!(warning.contains(&format!("project={}", c.project)), "{warning}");
    // The storage layer's own error line is inside the same request.
    let cause = lines.iter().find(|l| l.contains("storage request failed")).expect("the cause is logged");
    assert!(cause.contains(&id), "{cause}");
    assert!(lines.iter().all(|l| l.contains(&id)), "{lines:#?}");
}

#[tokio::test]
async fn json_lines_carry_request_id_route_project_and_status() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(log_subscriber(true, log_filter("debug").unwrap(), logs.clone()));
    let app = app().await;
    let c = Client::new(&app);
    let r = c.get("/v2/queues/q1/messages?limit=0").await;
    assert_eq!(r.status, 400);
    let id = r.header_value("x-openstack-request-id").unwrap();
    let done: Vec<Value> = logs
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "served")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    let span = &done[0]["span"];
    assert_eq!(span["request_id"], id);
    assert_eq!(span["method"], "GET");
    assert_eq!(span["route"], "/v2/queues/{queue_name}/messages");
    assert_eq!(span["project"], c.project.as_str());
    assert_eq!(span["status"], 400);
    assert_eq!(span["path"], "/v2/queues/q1/messages", "the path, without the query string");
    assert_eq!(done[0]["fields"]["status"], 400);
    assert!(done[0]["fields"]["latency"].is_string(), "{:?}", done[0]);
    // Another request gets another id.
    let again = c.get("/v2/queues/q1/messages?limit=0").await;
    assert_ne!(again.header_value("x-openstack-request-id"), Some(id));
}
