//! `moram serve`: an OpenAI-compatible HTTP server over a run's base model and adapter
//! (`/v1/completions`, `/v1/chat/completions` with streaming, `/v1/models`, `/health`), on axum.
//!
//! One engine thread owns the model ([`engine`]); handlers check the request ([`api`]), queue it
//! (a bounded queue: a full one answers 503 at once) and wait for the answer or stream its
//! pieces as server-sent events. Requests with the same settings are generated together, up to
//! the batch size. Binds 127.0.0.1 unless told otherwise; an optional bearer key; request bodies,
//! `max_tokens` and the queue are bounded; Ctrl-C stops taking requests and finishes the ones
//! being answered.

mod api;
mod engine;

use crate::generate::Source;
use anyhow::{Context, Result};
use api::{ApiError, Limits};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{Input, Job, Piece, Reply};
use moram_models::llm::GenerationConfig;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How the server runs.
pub struct Options {
    /// Address to bind (`127.0.0.1:8080`; port 0 picks a free one, printed at start).
    pub bind: String,
    /// Require `Authorization: Bearer <key>` on every `/v1` request.
    pub api_key: Option<String>,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// Requests waiting at most; more are refused with 503.
    pub queue: usize,
    /// Requests generated together at most (default: the run's evaluation batch size).
    pub batch: Option<usize>,
    /// Largest request body in bytes.
    pub max_body: usize,
}

struct AppState {
    jobs: mpsc::Sender<Job>,
    model: String,
    defaults: GenerationConfig,
    limits: Limits,
    api_key: Option<String>,
    counter: AtomicU64,
}

/// `moram serve`: loads the run's model and adapter as `moram generate` does, then serves until
/// Ctrl-C.
pub fn run(source: Source, options: Options) -> Result<()> {
    let (learner, adapter, batch_default) = crate::generate::load(&source)?;
    let defaults = learner.generation_config();
    let model = source.dir.file_name().map_or("moram".into(), |n| n.to_string_lossy().into_owned());
    let batch = options.batch.unwrap_or(batch_default).max(1);
    anyhow::ensure!(options.queue >= 1, "--queue must be at least 1");
    let (tx, rx) = mpsc::channel::<Job>(options.queue);
    let engine = std::thread::Builder::new()
        .name("moram-engine".into())
        .spawn(move || engine::run(learner, rx, batch))
        .context("starting the model thread")?;
    let state = Arc::new(AppState {
        jobs: tx,
        model,
        defaults,
        limits: Limits { max_tokens: options.max_tokens },
        api_key: options.api_key,
        counter: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::max(options.max_body))
        .with_state(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(&options.bind).await.with_context(|| format!("binding {}", options.bind))?;
        let addr = listener.local_addr()?;
        println!(
            "serving {} on http://{addr} (adapter {}; batch {batch}); Ctrl-C stops",
            source.dir.display(),
            adapter.display()
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("stopping: finishing the requests being answered ...");
            })
            .await
            .context("serving")
    })?;
    // Every sender is gone with the router: the engine finishes its batch and returns.
    engine.join().map_err(|_| anyhow::anyhow!("the model thread panicked"))?;
    Ok(())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.body())).into_response()
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let queued = state.jobs.max_capacity() - state.jobs.capacity();
    Json(json!({ "status": "ok", "model": state.model, "queued": queued }))
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(
        json!({ "object": "list", "data": [{ "id": state.model, "object": "model", "created": 0, "owned_by": "moram" }] }),
    ))
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    serve_request(state, headers, body, false).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    serve_request(state, headers, body, true).await
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else { return Ok(()) };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::status(401, "authentication_error", "missing or wrong API key (Authorization: Bearer <key>)"))
    }
}

/// Queues `job`, or refuses at once when the queue is full.
fn enqueue(state: &AppState, job: Job) -> Result<(), ApiError> {
    state.jobs.try_send(job).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            ApiError::status(503, "server_busy", "the request queue is full; retry shortly")
        }
        mpsc::error::TrySendError::Closed(_) => ApiError::status(503, "server_stopping", "the server is stopping"),
    })
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn serve_request(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    chat: bool,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let request = api::parse(&body, chat, &state.defaults, &state.limits)?;
    let id = format!("{}-{}", if chat { "chatcmpl" } else { "cmpl" }, state.counter.fetch_add(1, Ordering::Relaxed));
    let created = now();
    if request.stream {
        stream_answer(&state, request, chat, id, created)
    } else {
        let failed = |m: String| ApiError::status(400, "invalid_request_error", m);
        let stopped = |_| ApiError::status(500, "server_error", "the model thread stopped");
        let config = request.config.clone();
        let mut inputs = request.inputs;
        let answers = if inputs.len() == 1 {
            let (tx, rx) = oneshot::channel();
            enqueue(&state, Job { input: inputs.remove(0), config, reply: Reply::Whole(tx) })?;
            vec![rx.await.map_err(stopped)?.map_err(failed)?]
        } else {
            // A list is generated as `moram generate` generates it (evaluation's batches).
            let (tx, rx) = oneshot::channel();
            let input = inputs[0].clone();
            enqueue(&state, Job { input, config, reply: Reply::List(inputs, tx) })?;
            rx.await.map_err(stopped)?.map_err(failed)?
        };
        Ok(Json(api::response(chat, &id, created, &state.model, &answers)).into_response())
    }
}

/// A streamed answer: one event per text piece, a last chunk with the finish reason, `[DONE]`.
fn stream_answer(
    state: &AppState,
    request: api::Request,
    chat: bool,
    id: String,
    created: u64,
) -> Result<Response, ApiError> {
    let input = match <[Input; 1]>::try_from(request.inputs) {
        Ok([input]) => input,
        Err(_) => return Err(ApiError::field("prompt", "a streamed completion takes one prompt")),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    enqueue(state, Job { input, config: request.config, reply: Reply::Stream(tx) })?;
    let model = state.model.clone();
    let events = futures_util::stream::unfold((rx, false), move |(mut rx, finished)| {
        let (id, model) = (id.clone(), model.clone());
        async move {
            if finished {
                return None;
            }
            let event = |v: serde_json::Value| Event::default().data(v.to_string());
            match rx.recv().await {
                Some(Piece::Text(text)) => Some((
                    Ok::<_, Infallible>(event(api::chunk(chat, &id, created, &model, Some(&text), None))),
                    (rx, false),
                )),
                Some(Piece::Done(answer)) => {
                    let last = event(api::chunk(chat, &id, created, &model, None, Some(api::finish_reason(&answer))));
                    Some((Ok(last), (rx, true)))
                }
                Some(Piece::Failed(message)) => {
                    let err = ApiError::status(500, "server_error", message);
                    Some((Ok(event(err.body())), (rx, true)))
                }
                None => None,
            }
        }
    });
    let done = futures_util::stream::once(async { Ok::<_, Infallible>(Event::default().data("[DONE]")) });
    Ok(Sse::new(futures_util::StreamExt::chain(events, done)).into_response())
}
