//! Commands in plain messages, in French or English: `!task …` / `!tâche …`, `!cal …` /
//! `!agenda …`, `!help` / `!aide`. The reply is in the language of the command's words.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub fn parse(code: &str) -> Lang {
        if code == "en" {
            Lang::En
        } else {
            Lang::Fr
        }
    }

    /// `fr` text or `en` text.
    pub fn pick<'a>(self, fr: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }
}

/// Which tasks `!task list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFilter {
    All,
    Mine,
    Open,
    Late,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Today,
    Week,
    Upcoming,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    /// `!workspace widgets`: the task board added to the room as a widget.
    Widgets,
    TaskAdd {
        title: String,
        assignees: Vec<String>,
        due: Option<String>,
        priority: Option<String>,
        labels: Vec<String>,
    },
    TaskDone {
        id: String,
    },
    TaskCancel {
        id: String,
    },
    TaskAssign {
        id: String,
        assignees: Vec<String>,
    },
    /// Sets the description (the board's edit, by command).
    TaskDescribe {
        id: String,
        text: String,
    },
    /// Sets the due date, or removes it (`due` empty).
    TaskDue {
        id: String,
        due: String,
    },
    /// Adds a checklist item.
    TaskStep {
        id: String,
        text: String,
    },
    /// Ticks (or unticks) checklist item `n` (from 1).
    TaskTick {
        id: String,
        n: usize,
    },
    TaskList {
        filter: TaskFilter,
    },
    CalAdd {
        title: String,
        date: String,
        time: String,
        duration: Option<String>,
        repeat: Option<String>,
        count: Option<String>,
        until: Option<String>,
        attendees: Vec<String>,
        location: Option<String>,
    },
    CalList {
        span: Span,
    },
    CalMeeting {
        id: String,
    },
    CalRsvp {
        id: String,
        answer: String,
    },
    CalFeed {
        revoke: bool,
    },
    /// Changes an entry: the options given (title, date, time, duration, location).
    CalEdit {
        id: String,
        title: Option<String>,
        date: Option<String>,
        time: Option<String>,
        duration: Option<String>,
        location: Option<String>,
    },
    /// Deletes an entry, all its occurrences with it.
    CalDelete {
        id: String,
    },
    /// Removes one occurrence of a recurring entry: the one on `date`.
    CalSkip {
        id: String,
        date: String,
    },
    DocNew {
        name: String,
    },
    DocLink {
        library: String,
    },
    DocLs {
        path: String,
    },
    DocMkdir {
        path: String,
    },
    DocMv {
        name: String,
        to: String,
    },
    DocRm {
        name: String,
    },
    DocHistory {
        name: String,
    },
    DocLock {
        name: String,
        locked: bool,
    },
}

/// A command that could not be understood: what to tell the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub &'static str, pub &'static str);

/// Splits on spaces, keeping "double-quoted" and «French-quoted» words together.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '“') => (quote, quoted) = (Some('"'), true),
            (None, '«') => (quote, quoted) = (Some('»'), true),
            (Some('"'), '"' | '”') | (Some('»'), '»') => quote = None,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || quoted {
                    out.push(std::mem::take(&mut cur).trim().to_owned());
                }
                quoted = false;
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || quoted {
        out.push(cur.trim().to_owned());
    }
    out
}

const FR_WORDS: &[&str] = &[
    "ajouter",
    "ajoute",
    "fait",
    "terminer",
    "terminée",
    "annuler",
    "assigner",
    "liste",
    "lister",
    "moi",
    "ouvertes",
    "retard",
    "aujourdhui",
    "aujourd'hui",
    "semaine",
    "oui",
    "non",
    "peut-être",
    "peutetre",
    "flux",
    "révoquer",
    "revoquer",
    "créer",
    "creer",
    "lier",
    "dossier",
    "déplacer",
    "deplacer",
    "supprimer",
    "historique",
    "verrouiller",
    "déverrouiller",
    "deverrouiller",
    "réunion",
    "reunion",
    "étape",
    "etape",
    "cocher",
    "décrire",
    "decrire",
    "échéance",
    "echeance",
    "modifier",
    "sauter",
];

/// What `!help` / `!aide` answers: every command the parser takes, in the asker's language.
pub fn help(lang: Lang) -> &'static str {
    lang.pick(
        "!doc créer «nom» · !doc lier !bibliothèque:serveur · !doc liste [dossier] · !doc dossier chemin · !doc déplacer NOM dossier · !doc supprimer NOM · !doc historique NOM · !doc verrouiller NOM\n!tâche ajouter \"titre\" [@qui] [échéance:2026-12-01] [prio:haute] · !tâche fait ID · !tâche assigner ID @qui · !tâche décrire ID «texte» · !tâche échéance ID 2026-12-01|aucune · !tâche liste [moi|ouvertes|retard]\n!agenda ajouter \"titre\" 2026-03-16 10:00 [durée:1h] [répéter:hebdo] [fois:4] · !agenda liste [aujourdhui|semaine] · !agenda rsvp ID oui|non|peut-être · !agenda modifier ID [titre:«…»] [date:…] [heure:…] [durée:…] [lieu:«…»] · !agenda supprimer ID · !agenda sauter ID 2026-12-09 · !agenda flux [révoquer]\n!espace widgets",
        "!doc new \"name\" · !doc link !library:server · !doc ls [folder] · !doc mkdir path · !doc mv NAME folder · !doc rm NAME · !doc history NAME · !doc lock NAME\n!task add \"title\" [@who] [due:2026-12-01] [prio:high] · !task done ID · !task assign ID @who · !task describe ID \"text\" · !task due ID 2026-12-01|none · !task list [mine|open|late]\n!cal add \"title\" 2026-03-16 10:00 [duration:1h] [repeat:weekly] [count:4] · !cal list [today|week] · !cal rsvp ID yes|no|maybe · !cal edit ID [title:\"…\"] [date:…] [time:…] [duration:…] [at:\"…\"] · !cal rm ID · !cal skip ID 2026-12-09 · !cal feed [revoke]\n!workspace widgets",
    )
}

/// The command in `body`, if it is one, with the language to answer in (`default` when the
/// words do not tell). `Err` is a command of ours that is malformed.
pub fn parse(body: &str, default: Lang) -> Option<(Lang, Result<Command, Usage>)> {
    let words = words(body.trim());
    let head = words.first()?.to_lowercase();
    let sub = words.get(1).map(|w| w.to_lowercase()).unwrap_or_default();
    let lang = match head.as_str() {
        "!tâche" | "!tache" | "!agenda" | "!aide" | "!espace" => Lang::Fr,
        "!help" => Lang::En,
        _ if FR_WORDS.contains(&sub.as_str()) => Lang::Fr,
        _ if !sub.is_empty() => Lang::En,
        _ => default,
    };
    let rest = &words[words.len().min(2)..];
    let command = match head.as_str() {
        "!help" | "!aide" => Ok(Command::Help),
        "!task" | "!tâche" | "!tache" => task(&sub, rest),
        "!cal" | "!agenda" => cal(&sub, rest),
        "!doc" => doc(&sub, rest),
        "!workspace" | "!espace" => match sub.as_str() {
            "widgets" | "widget" => Ok(Command::Widgets),
            _ => Err(WORKSPACE_HELP),
        },
        _ => return None,
    };
    Some((lang, command))
}

fn user_ids(words: &[String]) -> Vec<String> {
    words.iter().filter(|w| w.starts_with('@') && w.contains(':')).cloned().collect()
}

/// `key:value` options (`due:2026-12-01`), keys lower-cased, French names mapped to English.
fn options(words: &[String]) -> BTreeMap<String, String> {
    words
        .iter()
        .filter(|w| !w.starts_with('@'))
        .filter_map(|w| w.split_once(':'))
        .map(|(k, v)| {
            let k = match k.to_lowercase().as_str() {
                "échéance" | "echeance" | "pour" => "due".to_owned(),
                "priorité" | "priorite" => "prio".to_owned(),
                "durée" | "duree" => "duration".to_owned(),
                "répéter" | "repeter" | "chaque" => "repeat".to_owned(),
                "fois" => "count".to_owned(),
                "jusqu'à" | "jusqua" => "until".to_owned(),
                "lieu" => "at".to_owned(),
                "titre" => "title".to_owned(),
                "heure" => "time".to_owned(),
                other => other.to_owned(),
            };
            (k, v.to_owned())
        })
        .collect()
}

const WORKSPACE_HELP: Usage = Usage("usage : !espace widgets", "usage: !workspace widgets");
const TASK_ADD: Usage = Usage(
    "usage : !tâche ajouter \"titre\" [@utilisateur:serveur] [échéance:2026-12-01] [prio:haute|normale|basse] [#étiquette]",
    "usage: !task add \"title\" [@user:server] [due:2026-12-01] [prio:high|normal|low] [#label]",
);
const TASK_ID: Usage = Usage("usage : !tâche fait|annuler|assigner ID …", "usage: !task done|cancel|assign ID …");
const TASK_ASSIGN: Usage =
    Usage("usage : !tâche assigner ID @utilisateur:serveur …", "usage: !task assign ID @user:server …");
const TASK_STEP: Usage = Usage(
    "usage : !tâche étape ID «texte» (ajoute une étape) · !tâche cocher ID N (coche l'étape N)",
    "usage: !task step ID \"text\" (adds a checklist item) · !task tick ID N (ticks item N)",
);
const TASK_HELP: Usage = Usage(
    "commandes : !tâche ajouter | fait | annuler | assigner | décrire | échéance | étape | cocher | liste [moi|ouvertes|retard]",
    "commands: !task add | done | cancel | assign | describe | due | step | tick | list [mine|open|late]",
);
const TASK_EDIT: Usage = Usage(
    "usage : !tâche décrire ID «texte» · !tâche échéance ID 2026-12-01[T17:00]|aucune",
    "usage: !task describe ID \"text\" · !task due ID 2026-12-01[T17:00]|none",
);
const CAL_ADD: Usage = Usage(
    "usage : !agenda ajouter \"titre\" 2026-03-16 10:00 [durée:1h30] [répéter:hebdo|quotidien|mensuel|lu,me] [fois:4|jusqu'à:2026-06-30] [lieu:\"salle 2\"] [@invité:serveur]",
    "usage: !cal add \"title\" 2026-03-16 10:00 [duration:1h30] [repeat:weekly|daily|monthly|mo,we] [count:4|until:2026-06-30] [at:\"room 2\"] [@guest:server]",
);
const CAL_RSVP: Usage = Usage("usage : !agenda rsvp ID oui|non|peut-être", "usage: !cal rsvp ID yes|no|maybe");
const CAL_HELP: Usage = Usage(
    "commandes : !agenda ajouter | liste [aujourdhui|semaine] | rsvp ID oui|non|peut-être | modifier ID | supprimer ID | sauter ID DATE | réunion ID | flux [révoquer]",
    "commands: !cal add | list [today|week] | rsvp ID yes|no|maybe | edit ID | rm ID | skip ID DATE | meeting ID | feed [revoke]",
);
const CAL_EDIT: Usage = Usage(
    "usage : !agenda modifier ID [titre:«titre»] [date:2026-12-03] [heure:15:00] [durée:1h30] [lieu:«salle 2»] · !agenda supprimer ID · !agenda sauter ID 2026-12-09 (une occurrence)",
    "usage: !cal edit ID [title:\"title\"] [date:2026-12-03] [time:15:00] [duration:1h30] [at:\"room 2\"] · !cal rm ID · !cal skip ID 2026-12-09 (one occurrence)",
);

fn task(sub: &str, rest: &[String]) -> Result<Command, Usage> {
    let first = rest.first().cloned();
    match sub {
        "add" | "ajouter" | "ajoute" => {
            let title = first.filter(|t| !t.is_empty() && !t.starts_with('@')).ok_or(TASK_ADD)?;
            let options = options(&rest[1..]);
            if options.keys().any(|k| !["due", "prio"].contains(&k.as_str())) {
                return Err(TASK_ADD);
            }
            let labels = rest[1..].iter().filter_map(|w| w.strip_prefix('#')).map(str::to_owned).collect();
            Ok(Command::TaskAdd {
                title,
                assignees: user_ids(&rest[1..]),
                due: options.get("due").cloned(),
                priority: options.get("prio").cloned(),
                labels,
            })
        }
        "done" | "fait" | "terminer" | "terminée" => Ok(Command::TaskDone { id: first.ok_or(TASK_ID)? }),
        "cancel" | "annuler" => Ok(Command::TaskCancel { id: first.ok_or(TASK_ID)? }),
        "step" | "étape" | "etape" => match rest {
            [id, text] if !text.trim().is_empty() => Ok(Command::TaskStep { id: id.clone(), text: text.clone() }),
            _ => Err(TASK_STEP),
        },
        "describe" | "décrire" | "decrire" => match rest {
            [id, text] => Ok(Command::TaskDescribe { id: id.clone(), text: text.clone() }),
            _ => Err(TASK_EDIT),
        },
        "due" | "échéance" | "echeance" => match rest {
            [id, due] => {
                let none = ["none", "aucune"].contains(&due.to_lowercase().as_str());
                Ok(Command::TaskDue { id: id.clone(), due: if none { String::new() } else { due.clone() } })
            }
            _ => Err(TASK_EDIT),
        },
        "tick" | "cocher" => match rest {
            [id, n] => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Command::TaskTick { id: id.clone(), n }),
                _ => Err(TASK_STEP),
            },
            _ => Err(TASK_STEP),
        },
        "assign" | "assigner" => {
            let id = first.ok_or(TASK_ASSIGN)?;
            let assignees = user_ids(&rest[1..]);
            if assignees.is_empty() {
                return Err(TASK_ASSIGN);
            }
            Ok(Command::TaskAssign { id, assignees })
        }
        "list" | "liste" | "lister" | "" => {
            let filter = match first.as_deref().map(str::to_lowercase).as_deref() {
                None | Some("all") | Some("toutes") => TaskFilter::All,
                Some("mine") | Some("moi") => TaskFilter::Mine,
                Some("open") | Some("ouvertes") => TaskFilter::Open,
                Some("late") | Some("retard") => TaskFilter::Late,
                Some(_) => return Err(TASK_HELP),
            };
            Ok(Command::TaskList { filter })
        }
        _ => Err(TASK_HELP),
    }
}

fn cal(sub: &str, rest: &[String]) -> Result<Command, Usage> {
    match sub {
        "add" | "ajouter" | "ajoute" => {
            let [title, date, time, more @ ..] = rest else { return Err(CAL_ADD) };
            let options = options(more);
            if options.keys().any(|k| !["duration", "repeat", "count", "until", "at"].contains(&k.as_str())) {
                return Err(CAL_ADD);
            }
            Ok(Command::CalAdd {
                title: title.clone(),
                date: date.clone(),
                time: time.clone(),
                duration: options.get("duration").cloned(),
                repeat: options.get("repeat").cloned(),
                count: options.get("count").cloned(),
                until: options.get("until").cloned(),
                attendees: user_ids(more),
                location: options.get("at").cloned(),
            })
        }
        "list" | "liste" | "" => {
            let span = match rest.first().map(|w| w.to_lowercase()).as_deref() {
                None => Span::Upcoming,
                Some("today") | Some("aujourdhui") | Some("aujourd'hui") => Span::Today,
                Some("week") | Some("semaine") => Span::Week,
                Some(_) => return Err(CAL_HELP),
            };
            Ok(Command::CalList { span })
        }
        "meeting" | "réunion" | "reunion" => match rest {
            [id] => Ok(Command::CalMeeting { id: id.clone() }),
            _ => Err(CAL_HELP),
        },
        "rsvp" => {
            let [id, answer] = rest else { return Err(CAL_RSVP) };
            let answer = match answer.to_lowercase().as_str() {
                "yes" | "oui" => "yes",
                "no" | "non" => "no",
                "maybe" | "peut-être" | "peutetre" => "maybe",
                _ => return Err(CAL_RSVP),
            };
            Ok(Command::CalRsvp { id: id.clone(), answer: answer.to_owned() })
        }
        "edit" | "modifier" => {
            let [id, more @ ..] = rest else { return Err(CAL_EDIT) };
            let options = options(more);
            let known = ["title", "date", "time", "duration", "at"];
            if options.is_empty() || options.len() != more.len() || options.keys().any(|k| !known.contains(&k.as_str()))
            {
                return Err(CAL_EDIT);
            }
            Ok(Command::CalEdit {
                id: id.clone(),
                title: options.get("title").cloned(),
                date: options.get("date").cloned(),
                time: options.get("time").cloned(),
                duration: options.get("duration").cloned(),
                location: options.get("at").cloned(),
            })
        }
        "rm" | "delete" | "supprimer" => match rest {
            [id] => Ok(Command::CalDelete { id: id.clone() }),
            _ => Err(CAL_EDIT),
        },
        "skip" | "sauter" => match rest {
            [id, date] => Ok(Command::CalSkip { id: id.clone(), date: date.clone() }),
            _ => Err(CAL_EDIT),
        },
        "feed" | "flux" => match rest.first().map(|w| w.to_lowercase()).as_deref() {
            None => Ok(Command::CalFeed { revoke: false }),
            Some("revoke") | Some("révoquer") | Some("revoquer") => Ok(Command::CalFeed { revoke: true }),
            Some(_) => Err(CAL_HELP),
        },
        _ => Err(CAL_HELP),
    }
}

const DOC_HELP: Usage = Usage(
    "commandes : !doc créer «nom» | lier !bibliothèque:serveur | liste [dossier] | dossier chemin/nom | déplacer NOM dossier | supprimer NOM | historique NOM | verrouiller NOM | déverrouiller NOM",
    "commands: !doc new \"name\" | link !library:server | ls [folder] | mkdir path/name | mv NAME folder | rm NAME | history NAME | lock NAME | unlock NAME",
);

fn doc(sub: &str, rest: &[String]) -> Result<Command, Usage> {
    let one = || match rest {
        [only] if !only.is_empty() => Ok(only.clone()),
        _ => Err(DOC_HELP),
    };
    match sub {
        "new" | "créer" | "creer" => Ok(Command::DocNew { name: one()? }),
        "link" | "lier" => Ok(Command::DocLink { library: one()? }),
        "ls" | "list" | "liste" | "" => match rest {
            [] => Ok(Command::DocLs { path: String::new() }),
            [path] => Ok(Command::DocLs { path: path.clone() }),
            _ => Err(DOC_HELP),
        },
        "mkdir" | "dossier" => Ok(Command::DocMkdir { path: one()? }),
        "mv" | "déplacer" | "deplacer" => match rest {
            [name, to] => Ok(Command::DocMv { name: name.clone(), to: to.clone() }),
            _ => Err(DOC_HELP),
        },
        "rm" | "supprimer" => Ok(Command::DocRm { name: one()? }),
        "history" | "historique" => Ok(Command::DocHistory { name: one()? }),
        "lock" | "verrouiller" => Ok(Command::DocLock { name: one()?, locked: true }),
        "unlock" | "déverrouiller" | "deverrouiller" => Ok(Command::DocLock { name: one()?, locked: false }),
        _ => Err(DOC_HELP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_in_both_languages_with_quotes_and_options() {
        let (lang, cmd) =
            parse("!task add \"Budget 2027\" @bob:ministere.fr due:2026-12-01 prio:high #finances", Lang::Fr).unwrap();
        assert_eq!(lang, Lang::En);
        assert_eq!(
            cmd.unwrap(),
            Command::TaskAdd {
                title: "Budget 2027".into(),
                assignees: vec!["@bob:ministere.fr".into()],
                due: Some("2026-12-01".into()),
                priority: Some("high".into()),
                labels: vec!["finances".into()],
            }
        );
        let (lang, cmd) = parse("!tâche ajouter «Note au cabinet» échéance:2026-12-02", Lang::En).unwrap();
        assert_eq!(lang, Lang::Fr);
        assert!(
            matches!(cmd.unwrap(), Command::TaskAdd { title, due: Some(d), .. } if title == "Note au cabinet" && d == "2026-12-02")
        );
        assert_eq!(
            parse("!task list late", Lang::Fr).unwrap().1.unwrap(),
            Command::TaskList { filter: TaskFilter::Late }
        );
        assert_eq!(
            parse("!agenda rsvp e1 peut-être", Lang::En).unwrap().1.unwrap(),
            Command::CalRsvp { id: "e1".into(), answer: "maybe".into() }
        );
        assert_eq!(
            parse("!doc déplacer «Note 1.pdf» Archives/2026", Lang::En).unwrap(),
            (Lang::Fr, Ok(Command::DocMv { name: "Note 1.pdf".into(), to: "Archives/2026".into() }))
        );
        assert_eq!(parse("!doc ls", Lang::Fr).unwrap(), (Lang::En, Ok(Command::DocLs { path: String::new() })));
        assert_eq!(parse("!doc rm", Lang::Fr).unwrap().1, Err(DOC_HELP));
        assert!(parse("bonjour à tous", Lang::Fr).is_none(), "not a command");
        assert!(parse("!weather", Lang::Fr).is_none(), "not one of ours");
    }

    /// The help names every command head the parser takes, the widgets one included, in
    /// both languages, and the lines it gives parse as those commands.
    #[test]
    fn the_help_names_every_command() {
        for (lang, heads) in [
            (Lang::En, ["!doc", "!task", "!cal", "!workspace widgets"]),
            (Lang::Fr, ["!doc", "!tâche", "!agenda", "!espace widgets"]),
        ] {
            let help = help(lang);
            for head in heads {
                assert!(help.contains(head), "{head} missing from {help}");
            }
        }
        assert_eq!(parse("!espace widgets", Lang::En).unwrap(), (Lang::Fr, Ok(Command::Widgets)));
    }

    #[test]
    fn malformed_commands_get_the_usage() {
        assert_eq!(parse("!task add", Lang::Fr).unwrap().1, Err(TASK_ADD));
        assert_eq!(parse("!task add \"x\" when:tomorrow", Lang::Fr).unwrap().1, Err(TASK_ADD));
        assert_eq!(parse("!task assign t1", Lang::Fr).unwrap().1, Err(TASK_ASSIGN));
        assert_eq!(parse("!task tick t1 0", Lang::Fr).unwrap().1, Err(TASK_STEP));
        assert_eq!(parse("!tâche cocher t1 2", Lang::En).unwrap().1, Ok(Command::TaskTick { id: "t1".into(), n: 2 }));
        assert_eq!(parse("!cal add \"x\" 2026-03-16", Lang::Fr).unwrap().1, Err(CAL_ADD));
        assert_eq!(parse("!cal rsvp e1 perhaps", Lang::Fr).unwrap().1, Err(CAL_RSVP));
        assert_eq!(parse("!task describe t1", Lang::Fr).unwrap().1, Err(TASK_EDIT));
    }

    #[test]
    fn calendar_entries_are_edited_deleted_and_skipped_by_command() {
        assert_eq!(
            parse("!agenda modifier e1 titre:«Comité élargi» heure:11:00 lieu:«Salle 5»", Lang::En).unwrap(),
            (
                Lang::Fr,
                Ok(Command::CalEdit {
                    id: "e1".into(),
                    title: Some("Comité élargi".into()),
                    date: None,
                    time: Some("11:00".into()),
                    duration: None,
                    location: Some("Salle 5".into()),
                })
            )
        );
        assert_eq!(
            parse("!cal edit e1 date:2026-12-03 duration:1h30", Lang::Fr).unwrap().1,
            Ok(Command::CalEdit {
                id: "e1".into(),
                title: None,
                date: Some("2026-12-03".into()),
                time: None,
                duration: Some("1h30".into()),
                location: None,
            })
        );
        assert_eq!(parse("!cal edit e1", Lang::Fr).unwrap().1, Err(CAL_EDIT), "nothing to change");
        assert_eq!(parse("!cal edit e1 colour:red", Lang::Fr).unwrap().1, Err(CAL_EDIT));
        assert_eq!(parse("!cal edit e1 title:x stray", Lang::Fr).unwrap().1, Err(CAL_EDIT));
        assert_eq!(
            parse("!agenda supprimer e1", Lang::En).unwrap(),
            (Lang::Fr, Ok(Command::CalDelete { id: "e1".into() }))
        );
        assert_eq!(parse("!cal rm e1", Lang::Fr).unwrap(), (Lang::En, Ok(Command::CalDelete { id: "e1".into() })));
        assert_eq!(
            parse("!agenda sauter e1 2026-12-09", Lang::En).unwrap(),
            (Lang::Fr, Ok(Command::CalSkip { id: "e1".into(), date: "2026-12-09".into() }))
        );
        assert_eq!(parse("!cal skip e1", Lang::Fr).unwrap().1, Err(CAL_EDIT));
    }

    #[test]
    fn a_task_is_described_and_dated_by_command() {
        assert_eq!(
            parse("!tâche décrire t1 «Chiffrer les scénarios»", Lang::En).unwrap(),
            (Lang::Fr, Ok(Command::TaskDescribe { id: "t1".into(), text: "Chiffrer les scénarios".into() }))
        );
        assert_eq!(
            parse("!task due t1 2026-12-15T17:00", Lang::Fr).unwrap(),
            (Lang::En, Ok(Command::TaskDue { id: "t1".into(), due: "2026-12-15T17:00".into() }))
        );
        assert_eq!(
            parse("!tâche échéance t1 aucune", Lang::En).unwrap().1,
            Ok(Command::TaskDue { id: "t1".into(), due: String::new() })
        );
    }
}
