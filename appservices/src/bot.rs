//! The bot: what it does with each event of a transaction (joins when invited, follows state,
//! answers commands) and the reminders it sends assignees on due dates.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::{
    commands::{self, Command, Lang, Span, TaskFilter},
    service::{hex_sha256, EntryEdit, Failure, NewEntry, NewTask, TaskEdit, Which, Workspace},
    tasks::{Progress, Task},
    widgets::View,
};

/// The homeserver could not be reached (or failed) while handling an event: the transaction
/// is refused so the homeserver delivers it again later.
#[derive(Debug)]
pub struct Retry(pub String);

/// Handles one event of a transaction. Idempotent: a transaction delivered again (after a
/// crash of either side, or a [`Retry`]) writes the same state events and resends replies
/// under the same transaction ids, which the homeserver drops.
pub async fn handle(ws: &Workspace, event: &Value) -> Result<(), Retry> {
    let (Some(room), Some(kind)) = (event["room_id"].as_str(), event["type"].as_str()) else { return Ok(()) };
    let sender = event["sender"].as_str().unwrap_or_default();
    if event.get("state_key").is_some() {
        if kind == "m.room.member" && event["state_key"] == ws.matrix.bot.as_str() {
            match event["content"]["membership"].as_str() {
                Some("invite") if ws.config.accepts_invite_from(sender) => return joined(ws, room, event).await,
                Some("invite") => return decline(ws, room, sender).await,
                Some("leave") | Some("ban") => ws.forget_room(room),
                _ => {}
            }
            return Ok(());
        }
        if kind == crate::library::LINK_TYPE && event["state_key"] == "" && sender != ws.matrix.bot {
            return link_written(ws, room, sender, event).await;
        }
        ws.observe_echo(room, event);
        return Ok(());
    }
    if kind != "m.room.message" || sender == ws.matrix.bot || event["content"]["msgtype"] == "m.notice" {
        return Ok(());
    }
    if ["m.file", "m.image", "m.video", "m.audio"].contains(&event["content"]["msgtype"].as_str().unwrap_or_default()) {
        return file_posted(ws, room, event).await;
    }
    let Some(body) = event["content"]["body"].as_str() else { return Ok(()) };
    let Some((lang, command)) = commands::parse(body, ws.lang) else { return Ok(()) };
    let event_id = event["event_id"].as_str().unwrap_or_default();
    let reply = match command {
        Ok(command) => match run(ws, room, sender, event_id, lang, command).await {
            Ok(text) => text,
            Err(f) if f.transient => return Err(Retry(f.en)),
            Err(f) => f.text(lang).to_owned(),
        },
        Err(usage) => lang.pick(usage.0, usage.1).to_owned(),
    };
    let txn = format!("reply-{}", &hex_sha256(event_id)[..24]);
    match ws.notice(room, &txn, &reply).await {
        Err(error) if error.is_transient() => Err(Retry(error.to_string())),
        Err(error) => {
            tracing::warn!(%room, %error, "could not reply");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// Marks an event the bot's device decrypted (set by `e2ee`; a forged one only refuses more).
pub const DECRYPTED: &str = "org.hemicycle.decrypted";

/// A file posted in a room linked to a library is filed in the library's top folder (a new
/// version when a file of that name is there); the room is told, with any file of the same
/// content already filed.
/// The poster must be an editor of the library: the bot files nothing they could not file.
async fn file_posted(ws: &Workspace, room: &str, event: &Value) -> Result<(), Retry> {
    // An encrypted attachment posted in the clear has its key readable by the servers already;
    // one that arrived encrypted must not be filed where they could read it.
    let key_already_public = event[DECRYPTED] != true;
    let Some(library) = ws.linked_library(room) else { return Ok(()) };
    let sender = event["sender"].as_str().unwrap_or_default();
    let content = &event["content"];
    let name = content["filename"].as_str().or(content["body"].as_str()).unwrap_or("file").to_owned();
    let event_id = event["event_id"].as_str().unwrap_or_default();
    let lang = ws.lang;
    let text = match ws.file(sender, &library, &name, content, event_id, key_already_public).await {
        Ok((branch, duplicate)) => {
            let mut text = format!(
                "{} « {name} » (v{})",
                lang.pick("Classé dans la bibliothèque :", "Filed in the library:"),
                branch.version
            );
            if let Some(other) = duplicate {
                text.push_str(&format!(" — {} « {other} »", lang.pick("même contenu que", "same content as")));
            }
            text
        }
        Err(f) if f.transient => return Err(Retry(f.en)),
        Err(f) => f.text(lang).to_owned(),
    };
    let txn = format!("filed-{}", &hex_sha256(event_id)[..24]);
    match ws.notice(room, &txn, &text).await {
        Err(error) if error.is_transient() => Err(Retry(error.to_string())),
        _ => Ok(()),
    }
}

/// An `org.hemicycle.library` state event someone wrote in `room`: recorded only when they
/// are an editor of that library; the room is told either way.
async fn link_written(ws: &Workspace, room: &str, sender: &str, event: &Value) -> Result<(), Retry> {
    let lang = ws.lang;
    let text = match ws.link_from_state(room, sender, &event["content"]).await {
        Ok(Some(library)) => {
            format!(
                "{} {library}",
                lang.pick("Les fichiers de ce salon seront classés dans", "Files posted here will be filed in")
            )
        }
        Ok(None) => lang
            .pick("Ce salon n'est plus lié à une bibliothèque.", "This room is no longer linked to a library.")
            .to_owned(),
        Err(f) if f.transient => return Err(Retry(f.en)),
        Err(f) => format!("{} {}", lang.pick("Lien refusé :", "Link refused:"), f.text(lang)),
    };
    let seed = event["event_id"].as_str().unwrap_or(room);
    let txn = format!("link-{}", &hex_sha256(seed)[..24]);
    match ws.notice(room, &txn, &text).await {
        Err(error) if error.is_transient() => Err(Retry(error.to_string())),
        _ => Ok(()),
    }
}

/// An invite from a user whose server `accept_invites_from` does not accept: rejected.
async fn decline(ws: &Workspace, room: &str, inviter: &str) -> Result<(), Retry> {
    tracing::info!(%room, %inviter, "invite refused (accept_invites_from)");
    let path = format!("/_matrix/client/v3/rooms/{}/leave", crate::matrix::segment(room));
    let body = serde_json::json!({ "reason": "invites from this server are not accepted" });
    match ws.matrix.call(reqwest::Method::POST, &path, Some(&body)).await {
        Err(error) if error.is_transient() => Err(Retry(error.to_string())),
        Err(error) => {
            tracing::warn!(%room, %error, "could not reject the invite");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// The library a command in `room` works on: the room itself when it is one, else its link.
fn library_of(ws: &Workspace, room: &str) -> Result<String, Failure> {
    let view = ws.view(room).unwrap_or_default();
    if view.space && view.tree {
        return Ok(room.to_owned());
    }
    ws.linked_library(room).ok_or_else(|| {
        Failure::bad(
            "ce salon n'est lié à aucune bibliothèque (!doc lier !bibliothèque:serveur)",
            "this room is linked to no library (!doc link !library:server)",
        )
    })
}

/// `folder/sub/name` → (the folder's room, the file name).
fn locate(ws: &Workspace, library: &str, path: &str) -> Result<(String, String), Failure> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    Ok((ws.folder(library, dir)?, name.to_owned()))
}

async fn joined(ws: &Workspace, room: &str, invite: &Value) -> Result<(), Retry> {
    if let Err(error) = ws.matrix.join(room).await {
        if error.is_transient() {
            return Err(Retry(error.to_string()));
        }
        tracing::warn!(%room, %error, "could not join the room it was invited to");
        return Ok(());
    }
    if let Err(error) = ws.load_room(room).await {
        tracing::warn!(%room, %error, "could not read the room's state");
    }
    let lang = ws.lang;
    let protected = ws.protect(room).await.unwrap_or(false);
    let text = if protected {
        lang.pick(
            "Bonjour ! Je tiens les tâches et l'agenda de ce salon. Tapez !aide pour les commandes.",
            "Hello! I keep this room's tasks and calendar. Type !help for the commands.",
        )
    } else {
        lang.pick(
            "Bonjour ! Donnez-moi le niveau de pouvoir 100 (ou celui qui modifie les niveaux de pouvoir) pour que seules mes écritures fassent foi.",
            "Hello! Give me power level 100 (or the level that may change power levels) so that only my writes count.",
        )
    };
    let seed = invite["event_id"].as_str().unwrap_or(room);
    let txn = format!("welcome-{}", &hex_sha256(seed)[..24]);
    if let Err(error) = ws.notice(room, &txn, text).await {
        tracing::warn!(%room, %error, "could not greet");
    }
    Ok(())
}

fn describe(task: &Task, ws: &Workspace, lang: Lang) -> String {
    let mut line = format!("[{}] {}", task.uid, task.title);
    let state = match task.progress {
        Progress::NeedsAction => lang.pick("à faire", "to do"),
        Progress::InProcess => lang.pick("en cours", "in progress"),
        Progress::Completed => lang.pick("terminée", "done"),
        Progress::Cancelled => lang.pick("annulée", "cancelled"),
    };
    line.push_str(&format!(" — {state}"));
    if let Some(due) = task.due_label() {
        line.push_str(&format!(" — {} {due}", lang.pick("échéance", "due")));
        if task.is_late(ws.clock.now(), ws.zone()) {
            line.push_str(lang.pick(" (en retard)", " (late)"));
        }
    }
    if !task.checklist.is_empty() {
        let done = task.checklist.iter().filter(|i| i.done).count();
        line.push_str(&format!(" — {done}/{} {}", task.checklist.len(), lang.pick("étapes", "items")));
    }
    let assignees: Vec<&str> = task.assignees().collect();
    if !assignees.is_empty() {
        line.push_str(&format!(" — {}", assignees.join(", ")));
    }
    if !task.description.is_empty() {
        let short: String = task.description.chars().take(200).collect();
        let cut = if short.len() < task.description.len() { "…" } else { "" };
        line.push_str(&format!(" — « {}{cut} »", short.replace('\n', " ")));
    }
    line
}

fn parse_duration(text: &str) -> Option<u32> {
    // 90, 90m, 1h, 1h30
    let text = text.to_lowercase();
    if let Some((h, m)) = text.split_once('h') {
        let h: u32 = h.parse().ok()?;
        let m: u32 = if m.is_empty() { 0 } else { m.trim_end_matches('m').parse().ok()? };
        return Some(h * 60 + m);
    }
    text.trim_end_matches("min").trim_end_matches('m').parse().ok()
}

/// The RRULE for `repeat:` (`weekly`, `hebdo`, `daily`, `monthly`, or days `mo,we` / `lu,me`).
fn rrule(repeat: &str, count: Option<&str>, until: Option<&str>) -> Option<String> {
    let days_fr = [("lu", "MO"), ("ma", "TU"), ("me", "WE"), ("je", "TH"), ("ve", "FR"), ("sa", "SA"), ("di", "SU")];
    let mut rule = match repeat.to_lowercase().as_str() {
        "daily" | "quotidien" | "jour" => "FREQ=DAILY".to_owned(),
        "weekly" | "hebdo" | "hebdomadaire" | "semaine" => "FREQ=WEEKLY".to_owned(),
        "monthly" | "mensuel" | "mois" => "FREQ=MONTHLY".to_owned(),
        days => {
            let codes: Option<Vec<String>> = days
                .split(',')
                .map(|d| {
                    let d = d.trim();
                    days_fr.iter().find(|(fr, en)| *fr == d || en.eq_ignore_ascii_case(d)).map(|(_, en)| en.to_string())
                })
                .collect();
            format!("FREQ=WEEKLY;BYDAY={}", codes?.join(","))
        }
    };
    if let Some(count) = count {
        rule.push_str(&format!(";COUNT={count}"));
    }
    if let Some(until) = until {
        rule.push_str(&format!(";UNTIL={}", until.replace('-', "")));
    }
    Some(rule)
}

async fn run(
    ws: &Workspace,
    room: &str,
    sender: &str,
    event_id: &str,
    lang: Lang,
    command: Command,
) -> Result<String, Failure> {
    match command {
        Command::Help => Ok(crate::commands::help(lang).to_owned()),
        Command::TaskAdd { title, assignees, due, priority, labels } => {
            let new = NewTask { title, assignees, due, priority, labels, ..Default::default() };
            let task = ws.add_task(room, sender, event_id, new).await?;
            Ok(format!("{} {}", lang.pick("Tâche créée :", "Task created:"), describe(&task, ws, lang)))
        }
        Command::TaskDone { id } => {
            let task = ws.set_progress(room, &id, Progress::Completed).await?;
            Ok(format!("{} {}", lang.pick("Tâche terminée :", "Task done:"), describe(&task, ws, lang)))
        }
        Command::TaskCancel { id } => {
            let task = ws.set_progress(room, &id, Progress::Cancelled).await?;
            Ok(format!("{} {}", lang.pick("Tâche annulée :", "Task cancelled:"), describe(&task, ws, lang)))
        }
        Command::TaskDescribe { id, text } => {
            let edit = TaskEdit { description: Some(text), ..Default::default() };
            let task = ws.edit_task(room, &id, edit).await?;
            Ok(format!("{} {}", lang.pick("Tâche décrite :", "Task described:"), describe(&task, ws, lang)))
        }
        Command::TaskDue { id, due } => {
            let task = ws.edit_task(room, &id, TaskEdit { due: Some(due), ..Default::default() }).await?;
            Ok(format!("{} {}", lang.pick("Échéance changée :", "Due date changed:"), describe(&task, ws, lang)))
        }
        Command::TaskStep { id, text } => {
            let task = ws.checklist(room, &id, Some(&text), None).await?;
            Ok(format!("{} {}", lang.pick("Étape ajoutée :", "Item added:"), describe(&task, ws, lang)))
        }
        Command::TaskTick { id, n } => {
            let task = ws.checklist(room, &id, None, Some(n)).await?;
            Ok(format!("{} {}", lang.pick("Étape cochée :", "Item ticked:"), describe(&task, ws, lang)))
        }
        Command::TaskAssign { id, assignees } => {
            let task = ws.assign(room, &id, &assignees).await?;
            Ok(format!("{} {}", lang.pick("Tâche assignée :", "Task assigned:"), describe(&task, ws, lang)))
        }
        Command::TaskList { filter } => {
            let view = ws.view(room).unwrap_or_default();
            let now = ws.clock.now();
            let lines: Vec<String> = view
                .tasks
                .values()
                .filter(|t| match filter {
                    TaskFilter::All => true,
                    TaskFilter::Open => t.progress.is_open(),
                    TaskFilter::Mine => t.participants.contains_key(sender),
                    TaskFilter::Late => t.is_late(now, ws.zone()),
                })
                .map(|t| describe(t, ws, lang))
                .collect();
            if lines.is_empty() {
                return Ok(lang.pick("Aucune tâche.", "No tasks.").to_owned());
            }
            Ok(lines.join("\n"))
        }
        Command::CalAdd { title, date, time, duration, repeat, count, until, attendees, location } => {
            let minutes = match duration.as_deref() {
                Some(d) => parse_duration(d).ok_or_else(|| {
                    Failure::bad(format!("durée illisible : {d}"), format!("unreadable duration: {d}"))
                })?,
                None => 60,
            };
            let rule = match repeat.as_deref() {
                Some(r) => Some(rrule(r, count.as_deref(), until.as_deref()).ok_or_else(|| {
                    Failure::bad(format!("répétition inconnue : {r}"), format!("unknown repetition: {r}"))
                })?),
                None => None,
            };
            let new = NewEntry {
                title,
                start: format!("{date}T{time}"),
                duration_minutes: minutes,
                rrule: rule,
                location: location.unwrap_or_default(),
                attendees,
                ..Default::default()
            };
            let entry = ws.add_entry(room, sender, event_id, new).await?;
            let when = entry.dtstart.local().map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
            Ok(format!(
                "{} [{}] {} — {when} ({})",
                lang.pick("Entrée ajoutée :", "Entry added:"),
                entry.uid,
                entry.title,
                entry.dtstart.tzid
            ))
        }
        Command::CalList { span } => {
            let (from, to) = match span {
                Span::Today => ws.day_bounds(1),
                Span::Week => ws.day_bounds(7),
                Span::Upcoming => (ws.clock.now(), ws.clock.now() + Duration::days(30)),
            };
            let zone = ws.zone();
            let lines: Vec<String> = ws
                .occurrences(room, from, to)?
                .iter()
                .take(50)
                .map(|o| format!("[{}] {} — {}", o.uid, o.title, o.start.with_timezone(&zone).format("%Y-%m-%d %H:%M")))
                .collect();
            if lines.is_empty() {
                return Ok(lang.pick("Rien à l'agenda.", "Nothing in the calendar.").to_owned());
            }
            Ok(lines.join("\n"))
        }
        Command::CalEdit { id, title, date, time, duration, location } => {
            // A date or a time alone keeps the other part of the entry's start.
            let start = match (date, time) {
                (None, None) => None,
                (date, time) => {
                    let current = ws.entry(room, &id)?.dtstart.local().ok_or_else(|| {
                        Failure::bad("entrée aux heures illisibles", "an entry with unreadable times")
                    })?;
                    let date = date.unwrap_or_else(|| current.format("%Y-%m-%d").to_string());
                    let time = time.unwrap_or_else(|| current.format("%H:%M").to_string());
                    Some(format!("{date}T{time}"))
                }
            };
            let duration_minutes = match duration.as_deref() {
                Some(d) => Some(parse_duration(d).ok_or_else(|| {
                    Failure::bad(format!("durée illisible : {d}"), format!("unreadable duration: {d}"))
                })?),
                None => None,
            };
            let edit = EntryEdit { title, start, duration_minutes, location, description: None };
            let entry = ws.edit_entry(room, &id, edit).await?;
            let when = entry.dtstart.local().map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
            Ok(format!(
                "{} [{}] {} — {when} ({})",
                lang.pick("Entrée modifiée :", "Entry changed:"),
                entry.uid,
                entry.title,
                entry.dtstart.tzid
            ))
        }
        Command::CalDelete { id } => {
            let entry = ws.delete_entry(room, &id).await?;
            Ok(format!("{} [{}] {}", lang.pick("Entrée supprimée :", "Entry deleted:"), entry.uid, entry.title))
        }
        Command::CalSkip { id, date } => {
            let day = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| {
                Failure::bad(
                    format!("date illisible : {date} (attendu 2026-12-09)"),
                    format!("unreadable date: {date} (expected 2026-12-09)"),
                )
            })?;
            let (entry, skipped) = ws.skip_occurrence(room, &id, Which::OnDate(day)).await?;
            Ok(format!(
                "{} [{}] {} — {}",
                lang.pick("Occurrence retirée :", "Occurrence removed:"),
                entry.uid,
                entry.title,
                skipped.format("%Y-%m-%d %H:%M")
            ))
        }
        Command::CalMeeting { id } => {
            let (entry, meeting) = ws.create_meeting(room, sender, &id, event_id).await?;
            Ok(format!("{} « {} » : {meeting}", lang.pick("Salon de réunion", "Meeting room"), entry.title))
        }
        Command::CalRsvp { id, answer } => {
            let entry = ws.rsvp(room, &id, sender, &answer).await?;
            Ok(format!("{} {} — {answer}", lang.pick("Réponse enregistrée :", "Answer recorded:"), entry.title))
        }
        Command::Widgets => {
            let views = ws.add_widgets(room, sender, lang).await?;
            let names: Vec<&str> = views
                .iter()
                .map(|v| match v {
                    View::Tasks => lang.pick("tâches", "tasks"),
                    View::Calendar => lang.pick("agenda", "calendar"),
                    View::Library(_) => lang.pick("bibliothèque", "library"),
                })
                .collect();
            Ok(format!(
                "{} {}.",
                lang.pick("Widgets ajoutés en haut du salon :", "Widgets added at the top of the room:"),
                names.join(", ")
            ))
        }
        Command::DocNew { name } => {
            // The new library is linked to this room: the asker must be allowed to link it.
            ws.require_state_right(room, sender, crate::library::LINK_TYPE).await?;
            let encrypted = ws.view(room).is_some_and(|v| v.encrypted);
            let library = ws.create_tree(&name, sender, None, event_id, encrypted).await?;
            // The asker owns it (power 100, invited): they need not have joined it yet.
            ws.record_link(room, &library).await?;
            ws.auto_widget(room, sender, View::Library(library.clone())).await;
            Ok(format!(
                "{} « {name} » : {library} — {}",
                lang.pick("Bibliothèque créée", "Library created"),
                lang.pick("ce salon y classe ses fichiers.", "this room files its files in it.")
            ))
        }
        Command::DocLink { library } => {
            ws.link_library(room, &library, sender).await?;
            ws.auto_widget(room, sender, View::Library(library.clone())).await;
            Ok(format!(
                "{} {library}",
                lang.pick("Les fichiers de ce salon seront classés dans", "Files posted here will be filed in")
            ))
        }
        Command::DocLs { path } => {
            let library = library_of(ws, room)?;
            ws.listing(sender, &ws.folder(&library, &path)?, lang).await
        }
        Command::DocMkdir { path } => {
            let library = library_of(ws, room)?;
            let (parent, name) = locate(ws, &library, &path)?;
            let encrypted = ws.view(&parent).is_some_and(|v| v.encrypted);
            ws.create_tree(&name, sender, Some(&parent), event_id, encrypted).await?;
            Ok(format!("{} {path}/", lang.pick("Dossier créé :", "Folder created:")))
        }
        Command::DocMv { name, to } => {
            let library = library_of(ws, room)?;
            let (folder, file) = locate(ws, &library, &name)?;
            let target = ws.folder(&library, &to)?;
            ws.move_file(sender, &folder, &file, &target, event_id).await?;
            Ok(format!("{} « {file} » → {to}/", lang.pick("Déplacé :", "Moved:")))
        }
        Command::DocRm { name } => {
            let library = library_of(ws, room)?;
            let (folder, file) = locate(ws, &library, &name)?;
            ws.remove_file(sender, &folder, &file, event_id).await?;
            Ok(format!("{} « {file} »", lang.pick("Supprimé :", "Deleted:")))
        }
        Command::DocHistory { name } => {
            let library = library_of(ws, room)?;
            let (folder, file) = locate(ws, &library, &name)?;
            let lines: Vec<String> = ws
                .history(sender, &folder, &file)
                .await?
                .iter()
                .map(|(id, b)| {
                    let state =
                        if b.active { lang.pick("actuelle", "current") } else { lang.pick("ancienne", "previous") };
                    format!("v{} — {state} — {id}", b.version)
                })
                .collect();
            Ok(lines.join("\n"))
        }
        Command::DocLock { name, locked } => {
            let library = library_of(ws, room)?;
            let (folder, file) = locate(ws, &library, &name)?;
            ws.set_locked(sender, &folder, &file, locked).await?;
            Ok(format!(
                "« {file} » {}",
                if locked { lang.pick("verrouillé", "locked") } else { lang.pick("déverrouillé", "unlocked") }
            ))
        }
        Command::CalFeed { revoke } => {
            let io = |e: std::io::Error| Failure::new(500, "M_UNKNOWN", e.to_string(), e.to_string());
            if revoke {
                let had = ws.revoke_feed(room, sender).map_err(io)?;
                return Ok(if had {
                    lang.pick("Lien d'abonnement révoqué.", "Subscription link revoked.")
                } else {
                    lang.pick("Vous n'aviez pas de lien d'abonnement.", "You had no subscription link.")
                }
                .to_owned());
            }
            let token = ws.new_feed(room, sender).map_err(io)?;
            let url = format!(
                "{}/calendar/{}.ics?token={token}",
                ws.config.public_url.trim_end_matches('/'),
                crate::matrix::segment(room)
            );
            let dm = ws.dm_room(sender).await?;
            let txn = format!("feed-{}", &hex_sha256(event_id)[..24]);
            let text = format!(
                "{} {url}",
                lang.pick(
                    "Abonnez votre agenda (Thunderbird, Outlook) à ce lien, personnel :",
                    "Subscribe your calendar (Thunderbird, Outlook) to this personal link:"
                )
            );
            ws.notice(&dm, &txn, &text).await?;
            Ok(lang
                .pick(
                    "Je vous ai envoyé votre lien d'abonnement en message direct.",
                    "I sent you your subscription link by direct message.",
                )
                .to_owned())
        }
    }
}

/// Sends each open task's assignees one reminder when it falls due, then sleeps until the next
/// one (or until tasks change). A reminder is recorded once sent; one cut short by a crash is
/// sent again under the same transaction id, which the homeserver drops.
pub async fn reminders(ws: Arc<Workspace>) {
    loop {
        let changed = ws.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = ws.clock.now();
        let mut next: Option<DateTime<Utc>> = None;
        for (room, task) in ws.all_tasks() {
            let (Some(at), true) = (task.reminder_at(ws.zone()), task.progress.is_open()) else { continue };
            let key = format!("{room}|{}|{}", task.uid, task.due.as_deref().unwrap_or_default());
            if ws.store.read(|s| s.reminded.contains(&key)) {
                continue;
            }
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            if let Err(failure) = remind(&ws, &room, &task, &key).await {
                tracing::warn!(%room, task = %task.uid, error = %failure.en, "reminder not sent; retrying in a minute");
                // The homeserver is unreachable: try again in a minute.
                next = Some(next.map_or(now + Duration::minutes(1), |n| n.min(now + Duration::minutes(1))));
            }
        }
        let wait =
            next.map_or(std::time::Duration::from_secs(3600), |n| (n - ws.clock.now()).to_std().unwrap_or_default());
        let _ = tokio::time::timeout(wait, changed).await;
    }
}

async fn remind(ws: &Workspace, room: &str, task: &Task, key: &str) -> Result<(), Failure> {
    let lang = ws.lang;
    let room_name = ws.view(room).map(|v| v.name).filter(|n| !n.is_empty()).unwrap_or_else(|| room.to_owned());
    for user in task.assignees() {
        // Only people in the room: a task written by someone else than the bot (in a room where
        // it lacks the power) must not make it message strangers.
        if !crate::rights::valid_user_id(user) || !ws.is_joined(room, user).await? {
            continue;
        }
        let dm = ws.dm_room(user).await?;
        let text = format!(
            "{} « {} » [{}] — {} {} ({room_name})",
            lang.pick("Rappel : la tâche", "Reminder: the task"),
            task.title,
            task.uid,
            lang.pick("échéance", "due"),
            task.due_label().unwrap_or_default()
        );
        let txn = format!("remind-{}", &hex_sha256(&format!("{key}|{user}"))[..24]);
        ws.notice(&dm, &txn, &text).await?;
    }
    ws.store
        .update(|s| s.reminded.insert(key.to_owned()))
        .map_err(|e| Failure::new(500, "M_UNKNOWN", e.to_string(), e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_and_durations_in_both_languages() {
        assert_eq!(rrule("hebdo", Some("4"), None).unwrap(), "FREQ=WEEKLY;COUNT=4");
        assert_eq!(rrule("lu,me", None, Some("2026-06-30")).unwrap(), "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260630");
        assert_eq!(rrule("MO,FR", None, None).unwrap(), "FREQ=WEEKLY;BYDAY=MO,FR");
        assert!(rrule("yearly", None, None).is_none());
        assert_eq!(parse_duration("1h30"), Some(90));
        assert_eq!(parse_duration("45m"), Some(45));
        assert_eq!(parse_duration("2h"), Some(120));
        assert_eq!(parse_duration("long"), None);
    }
}
