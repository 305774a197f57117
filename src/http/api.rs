//! The console's sections as JSON, under `/api/`: the same views the page
//! renders ([`super::views`]), for scripts. Read-only, like the page.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::dead_letter_search::{self, DeadLetterQuery};
use super::status::Status;
use super::views;

async fn json<T: Serialize + Send + 'static>(view: impl FnOnce() -> T + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(view).await {
        Ok(v) => match serde_json::to_string_pretty(&v) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

pub async fn overview(State(s): State<Arc<Status>>) -> Response {
    json(move || views::overview(&s)).await
}

pub async fn consumer(State(s): State<Arc<Status>>) -> Response {
    json(move || views::consumer(&s)).await
}

pub async fn history(State(s): State<Arc<Status>>) -> Response {
    json(move || views::history(&s)).await
}

pub async fn jobs(State(s): State<Arc<Status>>) -> Response {
    json(move || views::jobs(&s)).await
}

pub async fn dead_letters(State(s): State<Arc<Status>>, Query(q): Query<DeadLetterQuery>) -> Response {
    match q.search() {
        Ok(search) => json(move || dead_letter_search::view(&s, search, q.before())).await,
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": e}).to_string(),
        )
            .into_response(),
    }
}

pub async fn notifications(State(s): State<Arc<Status>>) -> Response {
    json(move || views::notifications(&s)).await
}

pub async fn predictions(State(s): State<Arc<Status>>) -> Response {
    json(move || views::predictions(&s)).await
}
