//! A plain-HTTP proxy in front of the API server for one operator (see [`CountingProxy`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::fixtures::Env;

/// Whether a request (method, URI) is held.
type Matcher = Arc<dyn Fn(&str, &http::Uri) -> bool + Send + Sync>;

/// Which requests a proxy holds back, and the switch that lets them through.
#[derive(Clone)]
pub struct Hold {
    matches: Matcher,
    open: tokio::sync::watch::Sender<bool>,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hold {
    /// Holds the requests `matches(method, uri)` accepts.
    pub fn new(matches: impl Fn(&str, &http::Uri) -> bool + Send + Sync + 'static) -> Hold {
        Hold {
            matches: Arc::new(matches),
            open: tokio::sync::watch::Sender::new(false),
            held: Arc::default(),
        }
    }

    /// Lets every held and later request through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// How many requests were held so far.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn wait(&self) {
        let mut open = self.open.subscribe();
        if !*open.borrow() {
            self.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let _ = open.wait_for(|o| *o).await;
    }
}

/// One request a [`CountingProxy`] forwarded.
pub struct Forwarded {
    pub method: String,
    pub path: String,
    /// The query string, if any.
    pub query: String,
    /// The API server's answer (502 when it could not be reached).
    pub status: u16,
}

impl Forwarded {
    /// A write (anything but GET), leaving out the Lease, which leader election renews.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.path.contains("/leases")
    }
}

/// Requests a [`CountingProxy`] forwarded, in the order their answers came.
pub type RequestLog = Arc<Mutex<Vec<Forwarded>>>;

/// A plain-HTTP proxy in front of the API server for one operator: it forwards every request
/// with a client of the chart ServiceAccount's own kubeconfig (so RBAC is exactly the chart's)
/// and records its method, path and answer. The API server's own `apiserver_request_total` cannot be
/// narrowed to one test (no namespace or user label, and other tests write in parallel); this
/// counts this operator's requests and nothing else.
///
/// It can also hold requests: those a [`Hold`] matches wait until it is released, e.g. to keep
/// the operator's first list of a kind from completing.
pub struct CountingProxy {
    /// A kubeconfig pointing at the proxy, with no credentials of its own.
    pub kubeconfig: PathBuf,
    log: RequestLog,
    task: tokio::task::JoinHandle<()>,
}

/// Headers that belong to one hop (or to the upstream client).
const HOP_HEADERS: [&str; 5] = [
    "host",
    "connection",
    "transfer-encoding",
    "content-length",
    "authorization",
];

impl CountingProxy {
    /// A proxy forwarding every request at once.
    pub async fn start(env: &Env) -> CountingProxy {
        CountingProxy::start_holding(env, None).await
    }

    /// A proxy that holds the requests `hold` matches until it is released.
    pub async fn start_holding(env: &Env, hold: Option<Hold>) -> CountingProxy {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&env.kubeconfig).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig");
        let upstream = kube::Client::try_from(config).expect("client");
        let log: RequestLog = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let recorded = log.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (upstream, recorded, hold) = (upstream.clone(), recorded.clone(), hold.clone());
            async move {
                if let Some(hold) =
                    hold.filter(|h| (h.matches)(request.method().as_str(), request.uri()))
                {
                    hold.wait().await;
                }
                forward(upstream, recorded, request).await
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let path = env.dir.join("proxy.kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{addr}\nusers:\n- name: proxy\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: proxy\ncurrent-context: proxy\n"
            ),
        )
        .unwrap();
        CountingProxy {
            kubeconfig: path,
            log,
            task,
        }
    }

    /// How many requests so far.
    pub fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Requests from position `from` on that `keep` accepts, as `METHOD path`.
    pub fn select(&self, from: usize, keep: impl Fn(&Forwarded) -> bool) -> Vec<String> {
        self.log.lock().unwrap()[from..]
            .iter()
            .filter(|r| keep(r))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Every request from position `from` on, with its answer.
    pub fn requests(&self, from: usize) -> Vec<String> {
        self.log.lock().unwrap()[from..]
            .iter()
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    upstream: kube::Client,
    log: RequestLog,
    request: axum::extract::Request,
) -> http::Response<axum::body::Body> {
    let (parts, body) = request.into_parts();
    let record = |status: u16| {
        log.lock().unwrap().push(Forwarded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            status,
        });
    };
    let failed = |e: String| {
        record(502);
        http::Response::builder()
            .status(http::StatusCode::BAD_GATEWAY)
            .body(axum::body::Body::from(e))
            .unwrap()
    };
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b.to_vec(),
        Err(e) => return failed(e.to_string()),
    };
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(uri);
    for (name, value) in &parts.headers {
        if !HOP_HEADERS.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let request = match builder.body(kube::client::Body::from(bytes)) {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    match upstream.send(request).await {
        Ok(response) => {
            record(response.status().as_u16());
            let (mut parts, body) = response.into_parts();
            for h in HOP_HEADERS {
                parts.headers.remove(h);
            }
            http::Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(e) => failed(e.to_string()),
    }
}
