//! The web views served as Matrix widgets (`im.vector.modular.widgets`): small pages with a
//! hand-written script speaking the widget API's postMessage protocol (the one
//! matrix-widget-api implements for Element), nothing downloaded at run time. They read and
//! write through the REST API with the OpenID token the client hands them, so a board, the
//! commands and the API go through the same operations and never disagree.

use axum::{
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{commands::Lang, service::Workspace};

const TASKS_HTML: &str = include_str!("../widgets/tasks.html");
const TASKS_JS: &str = include_str!("../widgets/tasks.js");
const CSS: &str = include_str!("../widgets/widget.css");

/// The widget's state key (its id in the room).
pub const TASKS_WIDGET: &str = "org.hemicycle.tasks";
pub const WIDGET_TYPE: &str = "im.vector.modular.widgets";
pub const LAYOUT_TYPE: &str = "io.element.widgets.layout";

/// The pages are framed by any client (the widget's host), may only run their own script and
/// talk to this origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors *";

fn asset(kind: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
}

/// The language of a page: the client's (`lang=fr-FR`, `en`), else the appservice's.
fn language(ws: &Workspace, asked: Option<&str>) -> Lang {
    match asked.map(|l| l.to_ascii_lowercase()) {
        Some(l) if l.starts_with("en") => Lang::En,
        Some(l) if l.starts_with("fr") => Lang::Fr,
        _ => ws.lang,
    }
}

/// `GET /widgets/tasks?room=…&widgetId=…&lang=…`: the task board.
pub async fn tasks_page(State(ws): State<std::sync::Arc<Workspace>>, Query(query): Query<PageQuery>) -> Response {
    let lang = language(&ws, query.lang.as_deref());
    let page = TASKS_HTML
        .replace("{lang}", lang.pick("fr", "en"))
        .replace("{title}", lang.pick("Tâches du salon", "Room tasks"))
        .replace("{title_label}", lang.pick("Titre de la nouvelle tâche", "Title of the new task"));
    asset("text/html; charset=utf-8", page)
}

pub async fn tasks_script() -> Response {
    asset("text/javascript; charset=utf-8", TASKS_JS.to_owned())
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS.to_owned())
}

/// The widget state event of the task board in a room, as Element reads it: the client fills
/// in the room, the widget id and its language.
pub fn tasks_widget(ws: &Workspace, lang: Lang) -> Value {
    let base = ws.config.public_url.trim_end_matches('/');
    json!({
        "type": "m.custom",
        "id": TASKS_WIDGET,
        "name": lang.pick("Tâches", "Tasks"),
        "url": format!(
            "{base}/widgets/tasks?room=$matrix_room_id&widgetId=$matrix_widget_id&lang=$org.matrix.msc2873.client_language"
        ),
        "creatorUserId": ws.matrix.bot,
        "data": {},
    })
}
