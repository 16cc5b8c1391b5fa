//! The workspace service: what the bot knows of its rooms (their tasks and calendar entries,
//! rebuilt from room state at start-up and kept current by the homeserver's transactions), and
//! the operations that commands and the REST API share. Everything is written as room state by
//! the bot, so it replicates to every server in the room and any client can read it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::{
    calendar::{self, Attendee, Entry, LocalTime, CALENDAR_TYPE},
    commands::Lang,
    config::{Clock, Config},
    matrix::{Matrix, MatrixError},
    store::{Feed, Store},
    tasks::{self, Participant, Progress, Task, TASK_TYPE},
    widgets::View,
};

/// Why an operation was refused: a message in both languages, and the HTTP status and
/// Matrix errcode the REST API answers with.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub errcode: &'static str,
    pub fr: String,
    pub en: String,
    /// The homeserver could not be reached or failed (5xx): worth trying again later rather
    /// than telling the user.
    pub transient: bool,
}

/// The longest message a [`Failure`] carries, in characters.
const MESSAGE_MAX: usize = 500;

fn clip(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MESSAGE_MAX) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl Failure {
    /// Messages quote what was refused: a quote of a huge field is cut to [`MESSAGE_MAX`]
    /// characters, so a refusal (in an error body or a notice) never echoes megabytes back.
    pub fn new(status: u16, errcode: &'static str, fr: impl Into<String>, en: impl Into<String>) -> Failure {
        Failure { status, errcode, fr: clip(fr.into()), en: clip(en.into()), transient: false }
    }

    pub fn bad(fr: impl Into<String>, en: impl Into<String>) -> Failure {
        Failure::new(400, "M_INVALID_PARAM", fr, en)
    }

    pub fn text(&self, lang: Lang) -> &str {
        lang.pick(&self.fr, &self.en)
    }
}

impl From<MatrixError> for Failure {
    fn from(e: MatrixError) -> Failure {
        if e.status == 403 {
            return Failure::new(
                403,
                "M_FORBIDDEN",
                format!("le serveur refuse l'écriture du robot (niveau de pouvoir insuffisant ?) : {}", e.error),
                format!("the homeserver refused the bot's write (power level too low?): {}", e.error),
            );
        }
        let mut failure =
            Failure::new(502, "M_UNKNOWN", format!("erreur du serveur Matrix : {e}"), format!("homeserver error: {e}"));
        failure.transient = e.is_transient();
        failure
    }
}

/// What a room holds, as the bot last saw it.
#[derive(Debug, Default, Clone)]
pub struct RoomView {
    pub name: String,
    pub tasks: BTreeMap<String, Task>,
    pub entries: BTreeMap<String, Entry>,
    /// A space room (`m.room.create` `type: m.space`).
    pub space: bool,
    /// MSC3088 purpose `org.matrix.msc3089.data_tree` enabled: a document library (or folder).
    pub tree: bool,
    /// File branches of a library folder, by the file event's id.
    pub branches: BTreeMap<String, crate::library::Branch>,
    /// Sub-folders (`m.space.child` with `via`): room id → `order`.
    pub children: BTreeMap<String, Option<String>>,
    /// Creators with infinite power (room version 12 and later), from `m.room.create`.
    pub creators: Vec<String>,
    /// `m.room.encryption` is set: the bot speaks here only through its encrypting device.
    pub encrypted: bool,
}

/// A new task, from a command or the REST API.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// `2026-12-01` or `2026-12-01T17:00`.
    #[serde(default)]
    pub due: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    /// `high`/`normal`/`low` (or `haute`/`normale`/`basse`).
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub assignees: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Changes to a task, from the board, the REST API (`PATCH …/tasks/{id}`) or a command
/// (`!task assign` adds to the assignees): fields left out are kept.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEdit {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A new due date (`2026-12-01` or `2026-12-01T17:00`), or `""` to remove it.
    #[serde(default)]
    pub due: Option<String>,
    /// The whole set of assignees, replacing the old one.
    #[serde(default)]
    pub assignees: Option<Vec<String>>,
}

/// A new calendar entry, from a command or the REST API.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    pub title: String,
    /// Local start, `2026-03-16T10:00`.
    pub start: String,
    #[serde(default = "default_minutes")]
    pub duration_minutes: u32,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub rrule: Option<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub attendees: Vec<String>,
}

fn default_minutes() -> u32 {
    60
}

/// Changes to a calendar entry, from the calendar widget, the REST API (`PATCH
/// …/calendar/{uid}`) or `!cal edit`: fields left out are kept. Times stay in the entry's zone.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryEdit {
    #[serde(default)]
    pub title: Option<String>,
    /// A new local start, `2026-03-16T10:00`, in the entry's zone (the duration is kept).
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Which occurrence of a recurring entry is meant: the one on a local date (in the entry's
/// zone; a command's `2026-12-09`), or the one starting at an instant (the API's, as it lists
/// occurrences).
#[derive(Debug, Clone, Copy)]
pub enum Which {
    OnDate(NaiveDate),
    At(DateTime<Utc>),
}

pub struct Workspace {
    pub config: Config,
    pub matrix: Matrix,
    pub store: Store,
    pub clock: Clock,
    pub hs_token: String,
    pub lang: Lang,
    /// Confirms the OpenID tokens REST API callers present.
    pub openid: crate::openid::OpenId,
    /// The bot's encrypting device, once opened (see [`crate::e2ee`]); unset when
    /// `encryption = false`.
    pub e2ee: std::sync::OnceLock<crate::e2ee::E2ee>,
    rooms: Mutex<HashMap<String, RoomView>>,
    /// The content of the bot's latest write of each state key whose echo (the same event,
    /// back in a transaction) has not come yet: an echo of an earlier write must not undo it.
    own_writes: Mutex<HashMap<(String, String, String), Value>>,
    /// Wakes the reminder scheduler when tasks change.
    pub changed: Notify,
}

/// A short id derived from the event that asked for the item: a transaction delivered again
/// writes the same state event instead of a second item.
pub fn short_id(prefix: char, seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let alphabet = b"abcdefghjkmnpqrstuvwxyz23456789";
    let tail: String = digest.iter().take(5).map(|b| alphabet[*b as usize % alphabet.len()] as char).collect();
    format!("{prefix}{tail}")
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn check_user(user: &str) -> Result<(), Failure> {
    if crate::rights::valid_user_id(user) {
        Ok(())
    } else {
        Err(Failure::bad(
            format!("{user:?} n'est pas un identifiant Matrix"),
            format!("{user:?} is not a Matrix user id"),
        ))
    }
}

impl Workspace {
    pub fn new(config: Config, matrix: Matrix, store: Store, hs_token: String) -> Workspace {
        let clock = Clock::new(config.clock);
        let lang = Lang::parse(&config.language);
        let openid =
            crate::openid::OpenId::new(&config.server_name, &config.allowed_servers, config.federation_verify_tls);
        Workspace {
            config,
            matrix,
            store,
            clock,
            hs_token,
            lang,
            openid,
            e2ee: std::sync::OnceLock::new(),
            rooms: Mutex::default(),
            own_writes: Mutex::default(),
            changed: Notify::new(),
        }
    }

    pub fn zone(&self) -> chrono_tz::Tz {
        self.config.zone()
    }

    /// Sends the bot's notice `text` in `room` under transaction id `txn`: encrypted through
    /// its device in an encrypted room (never in the clear there), as the appservice otherwise.
    pub async fn notice(&self, room: &str, txn: &str, text: &str) -> Result<String, MatrixError> {
        // Rooms the bot keeps no view of (the direct chats it opens) are asked: a homeserver
        // may encrypt new private rooms by default.
        let encrypted = match self.view(room) {
            Some(view) => view.encrypted,
            None => self.matrix.state_event(room, "m.room.encryption", "").await?.is_some(),
        };
        if !encrypted {
            return self.matrix.notice(room, txn, text).await;
        }
        match self.e2ee.get() {
            Some(device) => device.notice(room, txn, text).await,
            None => Err(MatrixError {
                status: 400,
                errcode: "M_UNKNOWN".into(),
                error: "an encrypted room, and the bot's encryption is off (encryption = false)".into(),
            }),
        }
    }

    pub fn view(&self, room: &str) -> Option<RoomView> {
        self.rooms.lock().expect("rooms").get(room).cloned()
    }

    pub fn all_tasks(&self) -> Vec<(String, Task)> {
        let rooms = self.rooms.lock().expect("rooms");
        rooms.iter().flat_map(|(room, v)| v.tasks.values().map(move |t| (room.clone(), t.clone()))).collect()
    }

    /// Reads a room's state into the view (at start-up and when the bot joins).
    pub async fn load_room(&self, room: &str) -> Result<(), MatrixError> {
        let state = self.matrix.state(room).await?;
        let mut view = RoomView::default();
        for event in &state {
            Self::apply(&mut view, event);
        }
        self.rooms.lock().expect("rooms").insert(room.to_owned(), view);
        self.changed.notify_one();
        Ok(())
    }

    /// Takes one state event into a view; others' events of our types are read the same way
    /// (the power levels decide who may write them, not the bot).
    fn apply(view: &mut RoomView, event: &Value) {
        let (Some(kind), Some(key)) = (event["type"].as_str(), event["state_key"].as_str()) else { return };
        let content = &event["content"];
        match kind {
            TASK_TYPE => match serde_json::from_value::<Task>(content.clone()) {
                Ok(task) if task.uid == key => {
                    view.tasks.insert(key.to_owned(), task);
                }
                _ => {
                    view.tasks.remove(key);
                }
            },
            CALENDAR_TYPE => match serde_json::from_value::<Entry>(content.clone()) {
                Ok(entry) if entry.uid == key && entry.validate().is_ok() => {
                    view.entries.insert(key.to_owned(), entry);
                }
                _ => {
                    view.entries.remove(key);
                }
            },
            // Encryption cannot be turned off once on (an event without an algorithm included).
            "m.room.encryption" if key.is_empty() => view.encrypted = true,
            "m.room.name" => view.name = content["name"].as_str().unwrap_or_default().to_owned(),
            "m.room.create" => {
                view.space = content["type"] == "m.space";
                view.creators = crate::rights::privileged_creators(event);
            }
            crate::library::PURPOSE_TYPE if key == crate::library::TREE_SUBTYPE => {
                view.tree = content[crate::library::ENABLED] == true;
            }
            crate::library::BRANCH_TYPE => match serde_json::from_value::<crate::library::Branch>(content.clone()) {
                Ok(branch) => {
                    view.branches.insert(key.to_owned(), branch);
                }
                Err(_) => {
                    view.branches.remove(key);
                }
            },
            "m.space.child" => {
                if content["via"].as_array().is_some_and(|v| !v.is_empty()) {
                    view.children.insert(key.to_owned(), content["order"].as_str().map(str::to_owned));
                } else {
                    view.children.remove(key);
                }
            }
            _ => {}
        }
    }

    /// A state event seen in a transaction.
    pub fn observe(&self, room: &str, event: &Value) {
        let mut rooms = self.rooms.lock().expect("rooms");
        if let Some(view) = rooms.get_mut(room) {
            Self::apply(view, event);
        }
        drop(rooms);
        if event["type"] == TASK_TYPE {
            self.changed.notify_one();
        }
    }

    /// A state event from the bot's transactions. The bot's own writes are in the view since it
    /// made them ([`Workspace::write_state`]): their echo changes nothing, and the echo of an
    /// earlier write of the same key, arriving after a later one, is not applied.
    pub fn observe_echo(&self, room: &str, event: &Value) {
        if event["sender"] == self.matrix.bot.as_str() {
            let (Some(kind), Some(key)) = (event["type"].as_str(), event["state_key"].as_str()) else { return };
            let id = (room.to_owned(), kind.to_owned(), key.to_owned());
            let mut own = self.own_writes.lock().expect("own writes");
            match own.get(&id) {
                Some(latest) if *latest != event["content"] => return,
                Some(_) => {
                    own.remove(&id);
                }
                None => {}
            }
        }
        self.observe(room, event);
    }

    /// Writes a state event of the bot's and puts it in the view first: a member's client sees
    /// the event (and a widget asks the REST API again) as soon as the homeserver has it,
    /// possibly before the bot has its answer, and the view must already hold it then. Should
    /// the homeserver refuse it, the room's state is read again.
    pub async fn write_state(&self, room: &str, kind: &str, key: &str, content: &Value) -> Result<String, Failure> {
        let id = self.note_own_write(room, kind, key, content);
        match self.matrix.put_state(room, kind, key, content).await {
            Ok(event_id) => Ok(event_id),
            Err(error) => {
                self.own_writes.lock().expect("own writes").remove(&id);
                if let Err(reread) = self.load_room(room).await {
                    tracing::warn!(%room, error = %reread.error, "could not read the room again after a refused write");
                }
                Err(error.into())
            }
        }
    }

    /// Puts a write of the bot's in the view and remembers it until its echo comes back.
    fn note_own_write(&self, room: &str, kind: &str, key: &str, content: &Value) -> (String, String, String) {
        let id = (room.to_owned(), kind.to_owned(), key.to_owned());
        self.own_writes.lock().expect("own writes").insert(id.clone(), content.clone());
        self.observe(room, &json!({ "type": kind, "state_key": key, "content": content }));
        id
    }

    pub fn forget_room(&self, room: &str) {
        self.rooms.lock().expect("rooms").remove(room);
    }

    /// Gives the bot's types the bot's own power level, so members below it cannot write (or
    /// forge) tasks and entries. Returns false when the bot may not change the power levels.
    pub async fn protect(&self, room: &str) -> Result<bool, MatrixError> {
        let mut levels = self.matrix.state_event(room, "m.room.power_levels", "").await?.unwrap_or_else(|| json!({}));
        let level_of = |levels: &Value, user: &str| {
            levels["users"][user].as_i64().unwrap_or_else(|| levels["users_default"].as_i64().unwrap_or(0))
        };
        let mine = level_of(&levels, &self.matrix.bot);
        let needed = levels["events"]["m.room.power_levels"]
            .as_i64()
            .unwrap_or_else(|| levels["state_default"].as_i64().unwrap_or(50));
        if mine < needed {
            return Ok(false);
        }
        let already = [TASK_TYPE, CALENDAR_TYPE].iter().all(|t| levels["events"][*t].as_i64() == Some(mine));
        if !already {
            if !levels["events"].is_object() {
                levels["events"] = json!({});
            }
            for kind in [TASK_TYPE, CALENDAR_TYPE] {
                levels["events"][kind] = json!(mine);
            }
            self.matrix.put_state(room, "m.room.power_levels", "", &levels).await?;
        }
        Ok(true)
    }

    fn known_room(&self, room: &str) -> Result<RoomView, Failure> {
        self.view(room).ok_or_else(|| {
            Failure::new(404, "M_NOT_FOUND", "le robot n'est pas dans ce salon", "the bot is not in this room")
        })
    }

    /// Whether `user` is joined to `room` now, as the homeserver tells the bot. A room the bot
    /// cannot read counts as not joined; only an unreachable homeserver is an error.
    pub async fn is_joined(&self, room: &str, user: &str) -> Result<bool, Failure> {
        match self.matrix.membership(room, user).await {
            Ok(m) => Ok(m.as_deref() == Some("join")),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(_) => Ok(false),
        }
    }

    /// `room`'s power levels now (`None`: it has none, or the bot cannot read them).
    async fn power_levels(&self, room: &str) -> Result<Option<Value>, Failure> {
        match self.matrix.state_event(room, "m.room.power_levels", "").await {
            Ok(levels) => Ok(levels),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(_) => Ok(None),
        }
    }

    /// `user`'s role in the library folder `folder`, read live: their membership and power level.
    pub async fn role(&self, folder: &str, user: &str) -> Result<crate::rights::Role, Failure> {
        let joined = self.is_joined(folder, user).await?;
        let levels = self.power_levels(folder).await?;
        let creators = self.view(folder).map(|v| v.creators).unwrap_or_default();
        Ok(crate::rights::tree_role(levels.as_ref(), &creators, user, joined))
    }

    /// Refuses unless `user` is joined to `folder` with at least role `need`: the bot does for
    /// people only what they could do in that folder themselves.
    pub async fn require(&self, folder: &str, user: &str, need: crate::rights::Role) -> Result<(), Failure> {
        use crate::rights::Role;
        let role = self.role(folder, user).await?;
        if role >= need {
            return Ok(());
        }
        let name = self.view(folder).map(|v| v.name).filter(|n| !n.is_empty()).unwrap_or_else(|| folder.to_owned());
        Err(match need {
            Role::Editor | Role::Owner => Failure::new(
                403,
                "M_FORBIDDEN",
                format!("il faut être membre de « {name} » avec le niveau d'éditeur (50) pour cela"),
                format!("this needs you to be joined to \"{name}\" as an editor (power level 50)"),
            ),
            _ => Failure::new(
                403,
                "M_FORBIDDEN",
                format!("il faut être membre de « {name} » pour cela"),
                format!("this needs you to be joined to \"{name}\""),
            ),
        })
    }

    /// Refuses unless `user` is joined to `room` with the power to send the state event `kind`
    /// there themselves.
    pub async fn require_state_right(&self, room: &str, user: &str, kind: &str) -> Result<(), Failure> {
        let joined = self.is_joined(room, user).await?;
        let levels = self.power_levels(room).await?;
        let creators = self.view(room).map(|v| v.creators).unwrap_or_default();
        let level = crate::rights::user_level(levels.as_ref(), &creators, user);
        if joined && level >= crate::rights::state_level(levels.as_ref(), kind) {
            return Ok(());
        }
        Err(Failure::new(
            403,
            "M_FORBIDDEN",
            "votre niveau de pouvoir dans ce salon ne permet pas de le lier à une bibliothèque",
            "your power level in this room does not allow linking it to a library",
        ))
    }

    /// Refuses unless `user` may send messages in `room` themselves (their level reaches
    /// `m.room.message`'s): a member who may not speak there could not give the bot a command,
    /// so the REST API does not write tasks or entries for them either.
    pub async fn require_speaker(&self, room: &str, user: &str) -> Result<(), Failure> {
        let levels = self.power_levels(room).await?;
        let creators = self.view(room).map(|v| v.creators).unwrap_or_default();
        let level = crate::rights::user_level(levels.as_ref(), &creators, user);
        if level >= crate::rights::event_level(levels.as_ref(), "m.room.message") {
            return Ok(());
        }
        Err(Failure::new(
            403,
            "M_FORBIDDEN",
            "votre niveau de pouvoir dans ce salon ne permet pas d'y écrire",
            "your power level in this room does not allow you to send messages there",
        ))
    }

    /// Whether `user` may add widgets to `room` themselves: joined, with the power to write
    /// `im.vector.modular.widgets` there.
    async fn may_add_widgets(&self, room: &str, user: &str) -> Result<bool, Failure> {
        let joined = self.is_joined(room, user).await?;
        let levels = self.power_levels(room).await?;
        let creators = self.view(room).map(|v| v.creators).unwrap_or_default();
        let level = crate::rights::user_level(levels.as_ref(), &creators, user);
        Ok(joined && level >= crate::rights::state_level(levels.as_ref(), crate::widgets::WIDGET_TYPE))
    }

    /// `!workspace widgets`: the task board, the calendar and (in a room linked to a library)
    /// the library browser added to `room` (widget state, pinned at the top in Element's
    /// layout), if `sender` may add widgets there. Returns the views added.
    pub async fn add_widgets(&self, room: &str, sender: &str, lang: Lang) -> Result<Vec<View>, Failure> {
        if !self.may_add_widgets(room, sender).await? {
            return Err(Failure::new(
                403,
                "M_FORBIDDEN",
                "votre niveau de pouvoir dans ce salon ne permet pas d'y ajouter des widgets",
                "your power level in this room does not allow adding widgets to it",
            ));
        }
        let mut views = vec![View::Tasks, View::Calendar];
        if let Some(library) = self.linked_library(room) {
            views.push(View::Library(library));
        }
        self.put_widgets(room, &views, lang).await?;
        Ok(views)
    }

    /// The widget of a calendar or a library just created in `room`, added with the asker's
    /// rights: when they may not add widgets there, nothing is added (what they created stays).
    /// A failure is logged, not reported: the creation itself succeeded.
    pub async fn auto_widget(&self, room: &str, asker: &str, view: View) {
        let added = match self.may_add_widgets(room, asker).await {
            Ok(true) => self.put_widgets(room, std::slice::from_ref(&view), self.lang).await,
            Ok(false) => return,
            Err(failure) => Err(failure),
        };
        if let Err(failure) = added {
            tracing::warn!(%room, widget = view.id(), error = %failure.en, "could not add the widget");
        }
    }

    /// Writes the widgets' state and the layout, each only when it differs from what the room
    /// has: adding twice changes nothing.
    async fn put_widgets(&self, room: &str, views: &[View], lang: Lang) -> Result<(), Failure> {
        use crate::widgets::{layout_with, LAYOUT_TYPE, WIDGET_TYPE};
        for view in views {
            let wanted = view.state(self, lang);
            let current = self.matrix.state_event(room, WIDGET_TYPE, view.id()).await?;
            // Same page (its name may be in the other language): kept as it is.
            if current.as_ref().is_some_and(|c| c["url"] == wanted["url"]) {
                continue;
            }
            self.matrix.put_state(room, WIDGET_TYPE, view.id(), &wanted).await?;
        }
        let ids: Vec<&str> = views.iter().map(View::id).collect();
        let layout = self.matrix.state_event(room, LAYOUT_TYPE, "").await?;
        if let Some(layout) = layout_with(layout.as_ref(), &ids) {
            self.matrix.put_state(room, LAYOUT_TYPE, "", &layout).await?;
        }
        Ok(())
    }

    /// Refuses user ids that are not joined to `room`: the bot writes, invites and messages only
    /// people who are in the room, never strangers named by a member.
    pub async fn check_members(&self, room: &str, users: &[String]) -> Result<(), Failure> {
        for user in users {
            if !self.is_joined(room, user).await? {
                return Err(Failure::bad(
                    format!("{user} n'est pas membre de ce salon"),
                    format!("{user} is not a member of this room"),
                ));
            }
        }
        Ok(())
    }

    async fn write_task(&self, room: &str, task: &Task) -> Result<(), Failure> {
        let content = serde_json::to_value(task).expect("task serializes");
        self.write_state(room, TASK_TYPE, &task.uid, &content).await?;
        Ok(())
    }

    async fn write_entry(&self, room: &str, entry: &Entry) -> Result<(), Failure> {
        let content = serde_json::to_value(entry).expect("entry serializes");
        self.write_state(room, CALENDAR_TYPE, &entry.uid, &content).await?;
        Ok(())
    }

    /// What a new task and a new entry share: a room the bot is in, a title (trimmed), user
    /// ids, and a zone (the default one when none is given).
    fn check_new<'a>(
        &self,
        room: &str,
        title: &'a str,
        users: &[String],
        zone: Option<&str>,
    ) -> Result<(&'a str, chrono_tz::Tz), Failure> {
        self.known_room(room)?;
        let title = title.trim();
        if title.is_empty() || title.len() > 500 {
            return Err(Failure::bad("le titre est vide ou trop long", "the title is empty or too long"));
        }
        for user in users {
            check_user(user)?;
        }
        if users.len() > 50 {
            return Err(Failure::bad("plus de 50 personnes", "more than 50 people"));
        }
        let zone = match zone {
            Some(z) => z.parse::<chrono_tz::Tz>().map_err(|_| {
                Failure::bad(format!("fuseau horaire inconnu : {z}"), format!("unknown time zone: {z}"))
            })?,
            None => self.zone(),
        };
        Ok((title, zone))
    }

    /// Creates a task; `seed` (the asking event's id, or a request id) makes its id.
    pub async fn add_task(&self, room: &str, sender: &str, seed: &str, new: NewTask) -> Result<Task, Failure> {
        let (title, zone) = self.check_new(room, &new.title, &new.assignees, new.time_zone.as_deref())?;
        self.check_members(room, &new.assignees).await?;
        let due = match &new.due {
            Some(text) => Some(tasks::parse_due(text).ok_or_else(|| {
                Failure::bad(
                    format!("échéance illisible : {text} (attendu 2026-12-01 ou 2026-12-01T17:00)"),
                    format!("unreadable due date: {text} (expected 2026-12-01 or 2026-12-01T17:00)"),
                )
            })?),
            None => None,
        };
        let priority = match &new.priority {
            Some(p) => tasks::parse_priority(p).ok_or_else(|| {
                Failure::bad(
                    format!("priorité inconnue : {p} (haute, normale, basse)"),
                    format!("unknown priority: {p} (high, normal, low)"),
                )
            })?,
            None => 0,
        };
        let now = stamp(self.clock.now());
        let task = Task {
            kind: "Task".into(),
            uid: short_id('t', seed),
            title: title.to_owned(),
            description: new.description.clone(),
            due: due.map(|(t, _)| t.format("%Y-%m-%dT%H:%M:%S").to_string()),
            time_zone: due.map(|_| zone.name().to_owned()),
            show_without_time: due.is_some_and(|(_, date_only)| date_only),
            progress: Progress::NeedsAction,
            priority,
            participants: new.assignees.iter().map(|u| (u.clone(), Participant::assignee())).collect(),
            keywords: new.labels.iter().map(|l| (l.clone(), true)).collect(),
            checklist: Vec::new(),
            creator: sender.to_owned(),
            created: now.clone(),
            updated: now,
        };
        self.write_task(room, &task).await?;
        Ok(task)
    }

    fn task(&self, room: &str, id: &str) -> Result<Task, Failure> {
        self.known_room(room)?.tasks.get(id).cloned().ok_or_else(|| {
            Failure::new(
                404,
                "M_NOT_FOUND",
                format!("pas de tâche {id} dans ce salon"),
                format!("no task {id} in this room"),
            )
        })
    }

    pub async fn set_progress(&self, room: &str, id: &str, progress: Progress) -> Result<Task, Failure> {
        let mut task = self.task(room, id)?;
        task.progress = progress;
        task.updated = stamp(self.clock.now());
        self.write_task(room, &task).await?;
        Ok(task)
    }

    /// Adds a checklist item (`add`), or ticks item `n` (from 1) — untick when already done.
    pub async fn checklist(
        &self,
        room: &str,
        id: &str,
        add: Option<&str>,
        tick: Option<usize>,
    ) -> Result<Task, Failure> {
        let mut task = self.task(room, id)?;
        if let Some(text) = add {
            let text = text.trim();
            if text.is_empty() || text.len() > 500 || task.checklist.len() >= 100 {
                return Err(Failure::bad(
                    "étape vide, trop longue, ou déjà 100 étapes",
                    "empty or too long item, or 100 items already",
                ));
            }
            task.checklist.push(tasks::ChecklistItem { text: text.to_owned(), done: false });
        }
        if let Some(n) = tick {
            let item = task.checklist.get_mut(n.wrapping_sub(1)).ok_or_else(|| {
                Failure::new(404, "M_NOT_FOUND", format!("pas d'étape {n} dans {id}"), format!("no item {n} in {id}"))
            })?;
            item.done = !item.done;
        }
        task.updated = stamp(self.clock.now());
        self.write_task(room, &task).await?;
        Ok(task)
    }

    /// `!task assign`: adds assignees, through the same edit as the board's.
    pub async fn assign(&self, room: &str, id: &str, users: &[String]) -> Result<Task, Failure> {
        let task = self.task(room, id)?;
        let mut assignees: Vec<String> = task.participants.keys().cloned().collect();
        assignees.extend(users.iter().filter(|u| !task.participants.contains_key(*u)).cloned());
        self.edit_task(room, id, TaskEdit { assignees: Some(assignees), ..Default::default() }).await
    }

    /// Changes a task's title, description, due date or assignees: everything is checked
    /// before the one write, so a refused edit changes nothing. New assignees must be joined
    /// to the room; ones already assigned stay even if they left (the board sends the whole set).
    pub async fn edit_task(&self, room: &str, id: &str, edit: TaskEdit) -> Result<Task, Failure> {
        let mut task = self.task(room, id)?;
        let before = serde_json::to_value(&task).expect("task serializes");
        if let Some(title) = &edit.title {
            let title = title.trim();
            if title.is_empty() || title.len() > 500 {
                return Err(Failure::bad("le titre est vide ou trop long", "the title is empty or too long"));
            }
            task.title = title.to_owned();
        }
        if let Some(description) = &edit.description {
            if description.len() > 10_000 {
                return Err(Failure::bad("description trop longue", "the description is too long"));
            }
            task.description = description.trim().to_owned();
        }
        if let Some(text) = &edit.due {
            if text.trim().is_empty() {
                (task.due, task.time_zone, task.show_without_time) = (None, None, false);
            } else {
                let (due, date_only) = tasks::parse_due(text.trim()).ok_or_else(|| {
                    Failure::bad(
                        format!("échéance illisible : {text} (attendu 2026-12-01 ou 2026-12-01T17:00)"),
                        format!("unreadable due date: {text} (expected 2026-12-01 or 2026-12-01T17:00)"),
                    )
                })?;
                let zone = task.time_zone.clone().unwrap_or_else(|| self.zone().name().to_owned());
                task.due = Some(due.format("%Y-%m-%dT%H:%M:%S").to_string());
                task.time_zone = Some(zone);
                task.show_without_time = date_only;
            }
        }
        if let Some(users) = &edit.assignees {
            for user in users {
                check_user(user)?;
            }
            if users.len() > 50 {
                return Err(Failure::bad("plus de 50 personnes", "more than 50 people"));
            }
            let new: Vec<String> = users.iter().filter(|u| !task.participants.contains_key(*u)).cloned().collect();
            self.check_members(room, &new).await?;
            task.participants = users.iter().map(|u| (u.clone(), Participant::assignee())).collect();
        }
        // An edit that changes nothing (an empty PATCH, the same values) writes nothing.
        if serde_json::to_value(&task).expect("task serializes") == before {
            return Ok(task);
        }
        task.updated = stamp(self.clock.now());
        self.write_task(room, &task).await?;
        Ok(task)
    }

    pub async fn add_entry(&self, room: &str, sender: &str, seed: &str, new: NewEntry) -> Result<Entry, Failure> {
        let (title, zone) = self.check_new(room, &new.title, &new.attendees, new.time_zone.as_deref())?;
        let start =
            tasks::parse_due(&new.start).filter(|(_, date_only)| !date_only).map(|(t, _)| t).ok_or_else(|| {
                Failure::bad(
                    format!("début illisible : {} (attendu 2026-03-16T10:00)", new.start),
                    format!("unreadable start: {} (expected 2026-03-16T10:00)", new.start),
                )
            })?;
        if new.duration_minutes == 0 || new.duration_minutes > 60 * 24 * 14 {
            return Err(Failure::bad("durée hors limites", "duration out of range"));
        }
        let end = start + Duration::minutes(i64::from(new.duration_minutes));
        let now = stamp(self.clock.now());
        let entry = Entry {
            uid: short_id('e', seed),
            title: title.to_owned(),
            description: new.description,
            location: new.location,
            dtstart: LocalTime::new(zone.name(), start),
            dtend: LocalTime::new(zone.name(), end),
            rrule: new.rrule.filter(|r| !r.is_empty()),
            exdate: Vec::new(),
            attendees: new.attendees.iter().map(|u| (u.clone(), Attendee { rsvp: "needs-action".into() })).collect(),
            meeting_room: None,
            creator: sender.to_owned(),
            created: now.clone(),
            updated: now,
        };
        entry.validate().map_err(|e| Failure::bad(format!("entrée invalide : {e}"), format!("invalid entry: {e}")))?;
        self.check_members(room, &new.attendees).await?;
        // The room's first entry makes its calendar: its widget comes with it.
        let first = self.known_room(room)?.entries.is_empty();
        self.write_entry(room, &entry).await?;
        if first {
            self.auto_widget(room, sender, View::Calendar).await;
        }
        Ok(entry)
    }

    /// The entry `id` of `room`'s calendar.
    pub fn entry(&self, room: &str, id: &str) -> Result<Entry, Failure> {
        self.known_room(room)?.entries.get(id).cloned().ok_or_else(|| {
            Failure::new(
                404,
                "M_NOT_FOUND",
                format!("pas d'entrée {id} dans l'agenda"),
                format!("no entry {id} in the calendar"),
            )
        })
    }

    /// Changes an entry's title, start, duration, location or description: everything is
    /// checked before the one write, so a refused edit changes nothing. Exceptions (`exdate`)
    /// that no longer fall on an occurrence of the moved entry are dropped.
    pub async fn edit_entry(&self, room: &str, id: &str, edit: EntryEdit) -> Result<Entry, Failure> {
        let mut entry = self.entry(room, id)?;
        let before = serde_json::to_value(&entry).expect("entry serializes");
        if let Some(title) = &edit.title {
            let title = title.trim();
            if title.is_empty() || title.len() > 500 {
                return Err(Failure::bad("le titre est vide ou trop long", "the title is empty or too long"));
            }
            entry.title = title.to_owned();
        }
        if let Some(location) = &edit.location {
            if location.len() > 500 {
                return Err(Failure::bad("lieu trop long", "the location is too long"));
            }
            location.trim().clone_into(&mut entry.location);
        }
        if let Some(description) = &edit.description {
            if description.len() > 10_000 {
                return Err(Failure::bad("description trop longue", "the description is too long"));
            }
            description.trim().clone_into(&mut entry.description);
        }
        if edit.start.is_some() || edit.duration_minutes.is_some() {
            let invalid = || Failure::bad("entrée aux heures illisibles", "an entry with unreadable times");
            let (old_start, old_end) =
                (entry.dtstart.local().ok_or_else(invalid)?, entry.dtend.local().ok_or_else(invalid)?);
            let start = match &edit.start {
                Some(text) => {
                    tasks::parse_due(text).filter(|(_, date_only)| !date_only).map(|(t, _)| t).ok_or_else(|| {
                        Failure::bad(
                            format!("début illisible : {text} (attendu 2026-03-16T10:00)"),
                            format!("unreadable start: {text} (expected 2026-03-16T10:00)"),
                        )
                    })?
                }
                None => old_start,
            };
            let minutes = match edit.duration_minutes {
                Some(m) if m == 0 || m > 60 * 24 * 14 => {
                    return Err(Failure::bad("durée hors limites", "duration out of range"))
                }
                Some(m) => i64::from(m),
                None => (old_end - old_start).num_minutes(),
            };
            let zone = entry.dtstart.tzid.clone();
            entry.dtstart = LocalTime::new(&zone, start);
            entry.dtend = LocalTime::new(&zone, start + Duration::minutes(minutes));
            if let Some(Ok(rule)) = entry.rrule.as_deref().map(calendar::parse_rrule) {
                let starts: std::collections::HashSet<String> =
                    rule.local_starts(start).iter().map(|t| t.format("%Y%m%dT%H%M%S").to_string()).collect();
                entry.exdate.retain(|x| starts.contains(x));
            }
        }
        entry.validate().map_err(|e| Failure::bad(format!("entrée invalide : {e}"), format!("invalid entry: {e}")))?;
        if serde_json::to_value(&entry).expect("entry serializes") == before {
            return Ok(entry);
        }
        entry.updated = stamp(self.clock.now());
        self.write_entry(room, &entry).await?;
        Ok(entry)
    }

    /// Deletes an entry: its state becomes `{}` (as a deleted task's), which no client reads as
    /// an entry. Returns what it was.
    pub async fn delete_entry(&self, room: &str, id: &str) -> Result<Entry, Failure> {
        let entry = self.entry(room, id)?;
        self.write_state(room, CALENDAR_TYPE, id, &json!({})).await?;
        Ok(entry)
    }

    /// Removes one occurrence of a recurring entry (an `exdate`, as RFC 5545's EXDATE): the
    /// others stay. Returns the entry and the local start removed. Skipping twice is harmless.
    pub async fn skip_occurrence(
        &self,
        room: &str,
        id: &str,
        which: Which,
    ) -> Result<(Entry, chrono::NaiveDateTime), Failure> {
        let mut entry = self.entry(room, id)?;
        let rule = match entry.rrule.as_deref().map(calendar::parse_rrule) {
            Some(Ok(rule)) => rule,
            _ => {
                return Err(Failure::bad(
                    format!("{id} ne se répète pas : supprimez l'entrée"),
                    format!("{id} does not repeat: delete the entry instead"),
                ))
            }
        };
        let (Some(start), Some(zone)) = (entry.dtstart.local(), entry.dtstart.zone()) else {
            return Err(Failure::bad("entrée aux heures illisibles", "an entry with unreadable times"));
        };
        let local = match which {
            Which::OnDate(date) => date.and_time(start.time()),
            Which::At(instant) => instant.with_timezone(&zone).naive_local(),
        };
        if !rule.local_starts(start).contains(&local) {
            let at = local.format("%Y-%m-%d %H:%M");
            return Err(Failure::new(
                404,
                "M_NOT_FOUND",
                format!("{id} n'a pas d'occurrence le {at}"),
                format!("{id} has no occurrence at {at}"),
            ));
        }
        let value = local.format("%Y%m%dT%H%M%S").to_string();
        if !entry.exdate.contains(&value) {
            entry.exdate.push(value);
            entry.exdate.sort();
            entry.updated = stamp(self.clock.now());
            self.write_entry(room, &entry).await?;
        }
        Ok((entry, local))
    }

    pub async fn rsvp(&self, room: &str, id: &str, user: &str, answer: &str) -> Result<Entry, Failure> {
        if !["yes", "no", "maybe"].contains(&answer) {
            return Err(Failure::bad("réponse attendue : yes, no ou maybe", "expected answer: yes, no or maybe"));
        }
        let mut entry = self.entry(room, id)?;
        entry.attendees.insert(user.to_owned(), Attendee { rsvp: answer.to_owned() });
        entry.updated = stamp(self.clock.now());
        self.write_entry(room, &entry).await?;
        Ok(entry)
    }

    /// Gives a calendar entry its own room in Nordeck's meeting format (room type
    /// `net.nordeck.meetings.meeting`, `net.nordeck.meetings.metadata` with `creator` and
    /// `calendar[]`), so the Nordeck meetings widget shows it; the asker and the attendees are
    /// invited, and the room is a child of the one holding the entry.
    pub async fn create_meeting(
        &self,
        room: &str,
        sender: &str,
        id: &str,
        seed: &str,
    ) -> Result<(Entry, String), Failure> {
        let mut entry = self.entry(room, id)?;
        if let Some(existing) = &entry.meeting_room {
            return Ok((entry.clone(), existing.clone()));
        }
        let meeting = match self.store.read(|s| s.created.get(seed).cloned()) {
            Some(made) => made,
            None => {
                let mut calendar = json!({ "uid": entry.uid, "dtstart": entry.dtstart, "dtend": entry.dtend });
                if let Some(rule) = &entry.rrule {
                    calendar["rrule"] = json!(rule);
                }
                if !entry.exdate.is_empty() {
                    calendar["exdate"] = json!(entry.exdate);
                }
                // Only attendees joined to the room now: the entry's state may have been written
                // by someone else than the bot (in a room where it lacks the power).
                let mut invite: Vec<&str> = vec![sender];
                for user in entry.attendees.keys().filter(|u| *u != sender) {
                    if crate::rights::valid_user_id(user) && self.is_joined(room, user).await? {
                        invite.push(user);
                    }
                }
                let via = json!({ "via": [self.config.server_name] });
                let body = json!({
                    "name": entry.title,
                    "topic": entry.description,
                    "preset": "private_chat",
                    "creation_content": { "type": "net.nordeck.meetings.meeting" },
                    "initial_state": [
                        { "type": "net.nordeck.meetings.metadata", "state_key": "",
                          "content": { "creator": sender, "calendar": [calendar] } },
                        { "type": "m.space.parent", "state_key": room, "content": via },
                    ],
                    "invite": invite,
                });
                let created =
                    self.matrix.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&body)).await?;
                let made = created["room_id"].as_str().unwrap_or_default().to_owned();
                self.store
                    .update(|s| s.created.insert(seed.to_owned(), made.clone()))
                    .map_err(|e| Failure::new(500, "M_UNKNOWN", e.to_string(), e.to_string()))?;
                made
            }
        };
        self.matrix.put_state(room, "m.space.child", &meeting, &json!({ "via": [self.config.server_name] })).await?;
        entry.meeting_room = Some(meeting.clone());
        entry.updated = stamp(self.clock.now());
        self.write_entry(room, &entry).await?;
        Ok((entry, meeting))
    }

    /// Occurrences of the room's entries in `[from, to)`, in time order.
    pub fn occurrences(
        &self,
        room: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<calendar::Occurrence>, Failure> {
        let view = self.known_room(room)?;
        let mut out: Vec<_> = view.entries.values().flat_map(|e| e.occurrences(from, to)).collect();
        out.sort_by_key(|o| o.start);
        Ok(out)
    }

    /// Start of today and of the day a week on, in the default zone.
    pub fn day_bounds(&self, days: i64) -> (DateTime<Utc>, DateTime<Utc>) {
        let zone = self.zone();
        let today: NaiveDate = self.clock.now().with_timezone(&zone).date_naive();
        let start = tasks::resolve(&zone, today.and_time(NaiveTime::MIN));
        let end = tasks::resolve(&zone, (today + Duration::days(days)).and_time(NaiveTime::MIN));
        (start, end)
    }

    /// Makes a feed token for `user`'s view of `room` (replacing their previous one).
    pub fn new_feed(&self, room: &str, user: &str) -> std::io::Result<String> {
        let mut bytes = [0u8; 24];
        rand::fill(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let hash = hex_sha256(&token);
        let feed = Feed { user: user.to_owned(), room: room.to_owned() };
        self.store.update(|s| {
            s.feeds.retain(|_, f| *f != feed);
            s.feeds.insert(hash, feed);
        })?;
        Ok(token)
    }

    pub fn revoke_feed(&self, room: &str, user: &str) -> std::io::Result<bool> {
        let feed = Feed { user: user.to_owned(), room: room.to_owned() };
        self.store.update(|s| {
            let before = s.feeds.len();
            s.feeds.retain(|_, f| *f != feed);
            before != s.feeds.len()
        })
    }

    pub fn feed(&self, token: &str) -> Option<Feed> {
        let hash = hex_sha256(token);
        self.store.read(|s| s.feeds.get(&hash).cloned())
    }

    /// The direct-message room with `user`, opened on first use and remembered.
    pub async fn dm_room(&self, user: &str) -> Result<String, Failure> {
        if let Some(room) = self.store.read(|s| s.dm_rooms.get(user).cloned()) {
            return Ok(room);
        }
        let room = self.matrix.create_dm(user).await?;
        self.store
            .update(|s| s.dm_rooms.insert(user.to_owned(), room.clone()))
            .map_err(|e| Failure::new(500, "M_UNKNOWN", e.to_string(), e.to_string()))?;
        Ok(room)
    }
}

pub fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(dir: &std::path::Path) -> Workspace {
        let text = format!(
            "homeserver_url = \"http://127.0.0.1:9\"\nserver_name = \"budget.gouv.fr\"\n\
             registration = \"r.yaml\"\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://x\"\n\
             data_dir = \"{}\"\n",
            dir.display()
        );
        let config: Config = toml::from_str(&text).unwrap();
        let bot = "@workspace:budget.gouv.fr";
        let matrix = Matrix::new("http://127.0.0.1:9", "as", bot, bot.to_owned());
        Workspace::new(config, matrix, Store::open(dir).unwrap(), "hs".into())
    }

    fn task(title: &str) -> Value {
        json!({ "@type": "Task", "uid": "tabcde", "title": title, "progress": "needs-action",
                "creator": "@alice:budget.gouv.fr", "created": "2026-12-01T08:00:00Z",
                "updated": "2026-12-01T08:00:00Z" })
    }

    fn echo(sender: &str, content: Value) -> Value {
        json!({ "type": TASK_TYPE, "state_key": "tabcde", "sender": sender, "content": content })
    }

    fn title(ws: &Workspace) -> String {
        ws.view("!r:budget.gouv.fr").unwrap().tasks["tabcde"].title.clone()
    }

    #[test]
    fn a_refusal_quotes_at_most_a_few_hundred_characters() {
        let huge = "é".repeat(100_000);
        let failure = Failure::bad(format!("date illisible : {huge}"), format!("unreadable date: {huge}"));
        assert_eq!(failure.en.chars().count(), MESSAGE_MAX + 1, "cut, with an ellipsis");
        assert!(failure.en.starts_with("unreadable date: éé") && failure.en.ends_with('…'));
        assert_eq!(failure.fr.chars().count(), MESSAGE_MAX + 1);
        assert_eq!(Failure::bad("court", "short").en, "short", "a short message is kept whole");
    }

    /// The bot writes a task twice; the homeserver's transactions bring the two events back
    /// after the second write: the first one's echo must not put the old title back. A
    /// member's later change is taken, and so is a write of the bot's it did not remember
    /// (made before a restart).
    #[test]
    fn an_echo_of_an_earlier_write_does_not_undo_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let ws = workspace(dir.path());
        let room = "!r:budget.gouv.fr";
        ws.rooms.lock().unwrap().insert(room.to_owned(), RoomView::default());
        ws.note_own_write(room, TASK_TYPE, "tabcde", &task("v1"));
        ws.note_own_write(room, TASK_TYPE, "tabcde", &task("v2"));
        assert_eq!(title(&ws), "v2", "the view holds the latest write at once");
        ws.observe_echo(room, &echo(&ws.matrix.bot, task("v1")));
        assert_eq!(title(&ws), "v2", "the first write's echo changes nothing");
        ws.observe_echo(room, &echo(&ws.matrix.bot, task("v2")));
        assert_eq!(title(&ws), "v2");
        ws.observe_echo(room, &echo("@alice:budget.gouv.fr", task("v3")));
        assert_eq!(title(&ws), "v3", "a member's change is taken");
        ws.observe_echo(room, &echo(&ws.matrix.bot, task("v4")));
        assert_eq!(title(&ws), "v4", "a write of the bot's it holds no record of is taken");
    }
}
