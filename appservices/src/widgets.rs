//! The web views served as Matrix widgets (`im.vector.modular.widgets`): a task board, a
//! calendar and a library browser. Small server-rendered pages with hand-written scripts
//! speaking the widget API's postMessage protocol (the one matrix-widget-api implements for
//! Element; `common.js` holds what the three share), nothing downloaded at run time. They read
//! and write through the REST API with the OpenID token the client hands them, so the views,
//! the commands and the API go through the same operations and never disagree.

use axum::{
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{commands::Lang, matrix::segment, service::Workspace};

const TASKS_HTML: &str = include_str!("../widgets/tasks.html");
const CALENDAR_HTML: &str = include_str!("../widgets/calendar.html");
const LIBRARY_HTML: &str = include_str!("../widgets/library.html");
const COMMON_JS: &str = include_str!("../widgets/common.js");
const TASKS_JS: &str = include_str!("../widgets/tasks.js");
const CALENDAR_JS: &str = include_str!("../widgets/calendar.js");
const LIBRARY_JS: &str = include_str!("../widgets/library.js");
const CSS: &str = include_str!("../widgets/widget.css");

/// The widgets' state keys (their ids in the room).
pub const TASKS_WIDGET: &str = "org.hemicycle.tasks";
pub const CALENDAR_WIDGET: &str = "org.hemicycle.calendar";
pub const LIBRARY_WIDGET: &str = "org.hemicycle.library";
pub const WIDGET_TYPE: &str = "im.vector.modular.widgets";
pub const LAYOUT_TYPE: &str = "io.element.widgets.layout";

/// One of the views, as a widget of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Tasks,
    Calendar,
    /// The browser of this library (its top room id).
    Library(String),
}

impl View {
    pub fn id(&self) -> &'static str {
        match self {
            View::Tasks => TASKS_WIDGET,
            View::Calendar => CALENDAR_WIDGET,
            View::Library(_) => LIBRARY_WIDGET,
        }
    }

    /// The widget state event as Element reads it: the client fills in the room, the widget id
    /// and its language.
    pub fn state(&self, ws: &Workspace, lang: Lang) -> Value {
        let base = ws.config.public_url.trim_end_matches('/');
        let (page, name, extra) = match self {
            View::Tasks => ("tasks", lang.pick("Tâches", "Tasks"), String::new()),
            View::Calendar => ("calendar", lang.pick("Agenda", "Calendar"), String::new()),
            View::Library(library) => {
                ("library", lang.pick("Bibliothèque", "Library"), format!("&library={}", segment(library)))
            }
        };
        let mut data = json!({});
        if let View::Library(library) = self {
            data["library"] = json!(library);
        }
        json!({
            "type": "m.custom",
            "id": self.id(),
            "name": name,
            "url": format!(
                "{base}/widgets/{page}?room=$matrix_room_id{extra}&widgetId=$matrix_widget_id&user=$matrix_user_id&lang=$org.matrix.msc2873.client_language"
            ),
            "creatorUserId": ws.matrix.bot,
            "data": data,
        })
    }
}

/// Element's layout with `ids` pinned at the top: entries already there are kept as they are
/// (someone may have moved them), new ones are added after them, and the top row shares the
/// width evenly. `None` when nothing changes.
pub fn layout_with(current: Option<&Value>, ids: &[&str]) -> Option<Value> {
    let mut layout = current.cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    if !layout["widgets"].is_object() {
        layout["widgets"] = json!({});
    }
    let missing: Vec<&str> = ids.iter().copied().filter(|id| layout["widgets"].get(*id).is_none()).collect();
    if missing.is_empty() {
        return None;
    }
    let widgets = layout["widgets"].as_object_mut().expect("an object");
    let mut top = widgets.values().filter(|w| w["container"] == "top").count();
    for id in missing {
        widgets.insert(id.to_owned(), json!({ "container": "top", "index": top, "height": 40 }));
        top += 1;
    }
    let width = 100 / top.max(1);
    for widget in widgets.values_mut().filter(|w| w["container"] == "top") {
        widget["width"] = json!(width);
    }
    Some(layout)
}

/// The pages are framed by any client (the widget's host), may only run their own scripts and
/// talk to this origin. `blob:` is where a downloaded (and decrypted) file is handed to the
/// browser from.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data: blob:; form-action 'none'; base-uri 'none'; frame-ancestors *";

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

type Ws = std::sync::Arc<Workspace>;

fn html(page: String) -> Response {
    asset("text/html; charset=utf-8", page)
}

/// `GET /widgets/tasks?room=…&widgetId=…&lang=…`: the task board.
pub async fn tasks_page(State(ws): State<Ws>, Query(query): Query<PageQuery>) -> Response {
    let lang = language(&ws, query.lang.as_deref());
    html(
        TASKS_HTML
            .replace("{lang}", lang.pick("fr", "en"))
            .replace("{title}", lang.pick("Tâches du salon", "Room tasks"))
            .replace("{title_label}", lang.pick("Titre de la nouvelle tâche", "Title of the new task")),
    )
}

/// `GET /widgets/calendar?room=…`: the calendar. Its "today" is the appservice's, in its zone,
/// so the page and the bot's `!cal list` agree on what this week is.
pub async fn calendar_page(State(ws): State<Ws>, Query(query): Query<PageQuery>) -> Response {
    let lang = language(&ws, query.lang.as_deref());
    let today = ws.clock.now().with_timezone(&ws.zone()).format("%Y-%m-%d").to_string();
    html(
        CALENDAR_HTML
            .replace("{lang}", lang.pick("fr", "en"))
            .replace("{today}", &today)
            .replace("{zone}", ws.zone().name())
            .replace("{title}", lang.pick("Agenda du salon", "Room calendar")),
    )
}

/// `GET /widgets/library?room=…&library=…`: the library browser.
pub async fn library_page(State(ws): State<Ws>, Query(query): Query<PageQuery>) -> Response {
    let lang = language(&ws, query.lang.as_deref());
    html(
        LIBRARY_HTML
            .replace("{lang}", lang.pick("fr", "en"))
            .replace("{title}", lang.pick("Bibliothèque de documents", "Document library")),
    )
}

fn script(body: &'static str) -> Response {
    asset("text/javascript; charset=utf-8", body.to_owned())
}

pub async fn common_script() -> Response {
    script(COMMON_JS)
}

pub async fn tasks_script() -> Response {
    script(TASKS_JS)
}

pub async fn calendar_script() -> Response {
    script(CALENDAR_JS)
}

pub async fn library_script() -> Response {
    script(LIBRARY_JS)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_adds_only_what_is_missing_and_keeps_what_is_there() {
        let first = layout_with(None, &[TASKS_WIDGET, CALENDAR_WIDGET]).unwrap();
        assert_eq!(first["widgets"][TASKS_WIDGET]["index"], 0);
        assert_eq!(first["widgets"][CALENDAR_WIDGET]["index"], 1);
        assert_eq!(first["widgets"][CALENDAR_WIDGET]["width"], 50);
        assert_eq!(layout_with(Some(&first), &[TASKS_WIDGET, CALENDAR_WIDGET]), None, "idempotent");
        let mut moved = first.clone();
        moved["widgets"][TASKS_WIDGET]["container"] = json!("right");
        let third = layout_with(Some(&moved), &[LIBRARY_WIDGET]).unwrap();
        assert_eq!(third["widgets"][TASKS_WIDGET]["container"], "right", "a moved widget stays");
        assert_eq!(third["widgets"][LIBRARY_WIDGET]["index"], 1);
        assert_eq!(third["widgets"][LIBRARY_WIDGET]["width"], 50);
    }
}
