//! Full-text search of room events (`POST /search`), kept in a tantivy index beside the database.
//!
//! The index is one more consumer of the event stream (like the push evaluator): it tails
//! `pos_eventid`, indexes the searchable keys of each event (`content.body` of messages, the room
//! name and topic) and records the position it reached in the commit itself, so after a crash it
//! resumes exactly after the last committed event. History fetched later from other servers
//! (backfill) is off the stream, at positions handed out downwards below it: the indexer follows
//! `backfillpos_eventid` downwards the same way, in the same batches and commits, and records
//! the lowest position it reached beside the other. The index holds no content to serve: hits are
//! read back from the store through the user's [`crate::rooms::visibility::Reader`], so history
//! visibility and redactions decide what a search returns, never the index alone.
//!
//! Text goes through one analyzer for documents and queries: split on non-alphanumerics,
//! lower-cased, accents folded ("réunion" and "reunion" are one word) and French-stemmed
//! ("réunions" finds "réunion").

pub mod state;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    ops::Bound,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedEventId, OwnedRoomId, RoomId};
use serde_json::Value;
use tantivy::{
    collector::{Count, TopDocs},
    directory::MmapDirectory,
    query::{BooleanQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery},
    schema::{
        Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value as _, FAST, INDEXED, STORED, STRING,
    },
    tokenizer::{AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer},
    DocAddress, Index, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};
use tokio::sync::watch;

pub use self::state::{Fields, Search};
use crate::{
    db::codec::{Be64, Codec},
    error::{Error, Result},
    services::Services,
};

/// Name the analyzer is registered under in the index.
const ANALYZER: &str = "hemicycle_fr";
/// Events read from the stream per commit while catching up.
const CHUNK: usize = 2_000;
/// Memory the index writer buffers before it flushes a segment (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 15_000_000;
/// Under a steady stream of events, the index commits (and becomes searchable) this often.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Longest a search waits for the index to reach the stream head before answering anyway.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// Hits read from the index per round while filtering them by what the user may see.
const HITS_PER_ROUND: usize = 50;
/// The most hits one request reads, however many the visibility filter drops.
const MAX_SCANNED: usize = 1_000;

/// The searchable keys of the spec, with the event type each belongs to.
pub const KEYS: [(&str, &str); 3] =
    [("content.body", "m.room.message"), ("content.name", "m.room.name"), ("content.topic", "m.room.topic")];

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    Rank,
    Recent,
}

/// What a search asks for, already checked by the handler.
pub struct SearchQuery {
    pub term: String,
    pub keys: Vec<&'static str>,
    pub rooms: Vec<OwnedRoomId>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub order: Ordering,
    pub limit: usize,
    pub next_batch: Option<String>,
}

/// One result: the event as the user may see it, its score and where it sits in the room.
pub struct Hit {
    pub event: Value,
    pub room_id: OwnedRoomId,
    pub pos: u64,
    pub rank: f64,
}

pub struct Results {
    pub hits: Vec<Hit>,
    pub count: u64,
    pub next_batch: Option<String>,
    pub highlights: Vec<String>,
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::French))
        .build()
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        // Frequencies for ranking; no positions (no phrase queries), which halves the postings.
        TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        // Stored to read a hit back, not indexed: a redaction deletes its target by position. As a
        // term, every event's id (44 random characters, unique) made most of the term dictionary
        // each commit builds.
        event_id: builder.add_text_field("event_id", STORED),
        room_id: builder.add_text_field("room_id", STRING),
        sender: builder.add_text_field("sender", STRING),
        key: builder.add_text_field("key", STRING),
        text: builder.add_text_field("text", text_options),
        pos: builder.add_u64_field("pos", FAST | INDEXED | STORED),
    };
    (builder.build(), fields)
}

/// What the indexer reads of a stored event and of its content (one shape for both levels),
/// each part left unparsed until it is needed: an event of a type that is not searched costs a
/// scan of its JSON, not a tree of values.
#[derive(serde::Deserialize, Default)]
struct Parts<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    room_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    sender: Option<&'a serde_json::value::RawValue>,
    /// A redaction's target: at the top level before room version 11, in the content after.
    #[serde(borrow)]
    redacts: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    content: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    body: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    name: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    topic: Option<&'a serde_json::value::RawValue>,
}

/// A part of an event that is a string (anything else: none, as a missing one).
fn string(raw: Option<&serde_json::value::RawValue>) -> Option<String> {
    serde_json::from_str(raw?.get()).ok()
}

/// How far the index reached: the stream up to `stream`, backfilled history down to `backfill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    stream: u64,
    backfill: u64,
}

/// The commit payload: `<stream> <backfill>` (an index committed before backfilled history was
/// indexed holds `<stream>` alone: none of it is in).
fn parse_payload(payload: &str) -> (u64, u64) {
    let mut parts = payload.split(' ');
    let stream = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let backfill = parts.next().and_then(|p| p.parse().ok()).unwrap_or(crate::db::STREAM_BASE);
    (stream, backfill)
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("search index: {e}"))
}

impl Search {
    /// Opens the index in `dir` (creating it, or rebuilding it from the stream when it was made
    /// with another schema).
    pub fn open(dir: &Path) -> Result<Self> {
        let (schema, fields) = schema();
        std::fs::create_dir_all(dir).map_err(index_error)?;
        let open = |schema: Schema| -> tantivy::Result<Index> {
            Index::open_or_create(MmapDirectory::open(dir).map_err(tantivy::TantivyError::from)?, schema)
        };
        let index = match open(schema.clone()) {
            Ok(index) => index,
            Err(tantivy::TantivyError::SchemaError(reason)) => {
                tracing::warn!(%reason, "search index made with another schema; rebuilding it");
                std::fs::remove_dir_all(dir).map_err(index_error)?;
                std::fs::create_dir_all(dir).map_err(index_error)?;
                open(schema).map_err(index_error)?
            }
            Err(e) => return Err(index_error(e)),
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY).map_err(index_error)?;
        // Merge less eagerly than tantivy's default: under a steady load of small commits its
        // merges took more CPU than the indexing itself.
        let mut merges = tantivy::indexer::LogMergePolicy::default();
        merges.set_min_num_segments(16);
        merges.set_min_layer_size(50_000);
        writer.set_merge_policy(Box::new(merges));
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_error)?;
        let payload = index.load_metas().map_err(index_error)?.payload.unwrap_or_default();
        let (done, backfill_done) = parse_payload(&payload);
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            fields,
            indexed: watch::channel(done).0,
            backfill_indexed: watch::channel(backfill_done).0,
            commit_wanted: tokio::sync::Notify::new(),
        })
    }

    /// Waits (a bounded time) until every event up to `pos` is indexed, and the backfilled
    /// history down to `backfilled`.
    pub async fn caught_up(&self, pos: u64, backfilled: u64) {
        let mut rx = self.indexed.subscribe();
        let mut backfill_rx = self.backfill_indexed.subscribe();
        if *rx.borrow() < pos || *backfill_rx.borrow() > backfilled {
            self.commit_wanted.notify_one();
        }
        let _ = tokio::time::timeout(CATCH_UP_WAIT, async {
            let _ = rx.wait_for(|done| *done >= pos).await;
            let _ = backfill_rx.wait_for(|done| *done <= backfilled).await;
        })
        .await;
    }

    /// The words of the search term as the analyzer reads them.
    fn tokens(&self, text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(token) = stream.next() {
            if !out.contains(&token.text) {
                out.push(token.text.clone());
            }
        }
        out
    }

    /// Adds the events after `done` up to `head`, then the backfilled history below
    /// `done.backfill` down to `low` (at most [`CHUNK`] of each) to the writer, uncommitted;
    /// returns the positions reached. Runs on a blocking thread. On an error the uncommitted
    /// documents are rolled back.
    fn index_range(&self, services: &Services, done: Progress, head: u64, low: u64) -> Result<Progress> {
        let mut writer = self.writer.lock().expect("search writer");
        let mut add = || -> Result<Progress> {
            let stream = if head > done.stream {
                self.add_range(&mut writer, services, done.stream, head)?
            } else {
                done.stream
            };
            let backfill = if low < done.backfill {
                self.add_backfill(&mut writer, services, done.backfill, low)?
            } else {
                done.backfill
            };
            Ok(Progress { stream, backfill })
        };
        add().or_else(|error| {
            writer.rollback().map_err(index_error)?;
            Err(error)
        })
    }

    /// Commits what the writer holds with the positions `reached` as payload, so a restart
    /// resumes after them, and makes it searchable. A commit writes a segment: the indexer calls
    /// this at most once per [`COMMIT_EVERY`] under load (or when a search waits), never once per
    /// small batch, which under a steady stream made the merges cost more than the requests
    /// themselves.
    fn commit(&self, reached: Progress) -> Result<()> {
        let mut writer = self.writer.lock().expect("search writer");
        let mut commit = writer.prepare_commit().map_err(index_error)?;
        commit.set_payload(&format!("{} {}", reached.stream, reached.backfill));
        if let Err(error) = commit.commit() {
            writer.rollback().map_err(index_error)?;
            return Err(index_error(error));
        }
        drop(writer);
        self.reader.reload().map_err(index_error)
    }

    fn add_range(&self, writer: &mut IndexWriter, services: &Services, done: u64, head: u64) -> Result<u64> {
        let tables = &services.db.tables;
        let mut reached = head;
        for (count, entry) in tables.rooms.pos_eventid.scan_from(Vec::new(), Be64(done + 1).encode(), true).enumerate()
        {
            let (Be64(pos), event_id) = entry?;
            if pos > head {
                break;
            }
            if count == CHUNK {
                reached = pos - 1;
                break;
            }
            self.add_event(writer, services, pos, &event_id)?;
        }
        Ok(reached)
    }

    /// Adds the backfilled events below `done` (downwards, at most [`CHUNK`]) to the writer;
    /// returns the lowest position reached (`low` once every one down to it is in).
    fn add_backfill(&self, writer: &mut IndexWriter, services: &Services, done: u64, low: u64) -> Result<u64> {
        let table = &services.db.tables.rooms.backfillpos_eventid;
        let mut reached = low;
        for (count, entry) in table.scan_from(Vec::new(), Be64(done - 1).encode(), false).enumerate() {
            let (Be64(pos), event_id) = entry?;
            if pos < low {
                // Stored after `low` was read: the next round takes it.
                break;
            }
            if count == CHUNK {
                reached = pos + 1;
                break;
            }
            self.add_event(writer, services, pos, &event_id)?;
        }
        Ok(reached.min(done))
    }

    /// Indexes the searchable key of one event at `pos` (a redaction removes its target).
    fn add_event(
        &self,
        writer: &mut IndexWriter,
        services: &Services,
        pos: u64,
        event_id: &ruma::EventId,
    ) -> Result<()> {
        let f = &self.fields;
        let Some(json) = services.rooms.pdu_json(event_id)? else { return Ok(()) };
        let Ok(event) = serde_json::from_slice::<Parts<'_>>(&json) else { return Ok(()) };
        let content = event.content.and_then(|c| serde_json::from_str::<Parts<'_>>(c.get()).ok());
        let content = content.unwrap_or_default();
        let kind = string(event.kind).unwrap_or_default();
        if kind == "m.room.redaction" {
            let target = string(content.redacts).or_else(|| string(event.redacts));
            let target = target.and_then(|t| OwnedEventId::try_from(t).ok());
            // The target is indexed at its position; one not stored yet was never indexed. Only a
            // redaction that took effect removes it: any member's server may send one naming any
            // event id.
            let room = string(event.room_id).unwrap_or_default();
            if let Some(meta) = target.map(|t| services.rooms.redacted_target(&room, &t)).transpose()?.flatten() {
                writer.delete_term(Term::from_field_u64(f.pos, meta.pos));
            }
            return Ok(());
        }
        let Some((key, _)) = KEYS.iter().find(|(_, t)| *t == kind) else { return Ok(()) };
        let text = match *key {
            "content.body" => content.body,
            "content.name" => content.name,
            "content.topic" => content.topic,
            _ => None,
        };
        let Some(text) = string(text) else { return Ok(()) };
        let mut doc = TantivyDocument::default();
        doc.add_text(f.event_id, event_id.as_str());
        doc.add_text(f.room_id, string(event.room_id).unwrap_or_default());
        doc.add_text(f.sender, string(event.sender).unwrap_or_default());
        doc.add_text(f.key, key);
        doc.add_text(f.text, text);
        doc.add_u64(f.pos, pos);
        writer.add_document(doc).map_err(index_error)?;
        Ok(())
    }

    fn build_query(&self, query: &SearchQuery, words: &[String], before: Option<u64>) -> Box<dyn Query> {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in words {
            let exact: Box<dyn Query> =
                Box::new(TermQuery::new(Term::from_field_text(f.text, word), IndexRecordOption::WithFreqs));
            // A word of three letters or more also finds the words it begins ("réu" → "réunion").
            let clause: Box<dyn Query> = match (word.chars().count() >= 3)
                .then(|| RegexQuery::from_pattern(&format!("{}.*", escape(word)), f.text).ok())
                .flatten()
            {
                Some(prefix) => {
                    Box::new(BooleanQuery::new(vec![(Occur::Should, exact), (Occur::Should, Box::new(prefix))]))
                }
                None => exact,
            };
            clauses.push((Occur::Must, clause));
        }
        let terms = |field: Field, values: &mut dyn Iterator<Item = &str>| -> Box<dyn Query> {
            Box::new(TermSetQuery::new(values.map(|v| Term::from_field_text(field, v)).collect::<Vec<_>>()))
        };
        clauses.push((Occur::Must, terms(f.room_id, &mut query.rooms.iter().map(|r| r.as_str()))));
        clauses.push((Occur::Must, terms(f.key, &mut query.keys.iter().copied())));
        if let Some(senders) = &query.senders {
            clauses.push((Occur::Must, terms(f.sender, &mut senders.iter().map(String::as_str))));
        }
        if !query.not_senders.is_empty() {
            clauses.push((Occur::MustNot, terms(f.sender, &mut query.not_senders.iter().map(String::as_str))));
        }
        if let Some(before) = before {
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(Bound::Unbounded, Bound::Excluded(Term::from_field_u64(f.pos, before)))),
            ));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// Runs a search for `user`: hits in the asked rooms that the user may see, in the asked
    /// order, at most `limit`, with the token of the next page.
    pub fn search(
        &self,
        services: &Services,
        user: &ruma::UserId,
        query: &SearchQuery,
        accepts: &dyn Fn(&Value) -> bool,
    ) -> Result<Results> {
        let words = self.tokens(&query.term);
        let highlights: Vec<String> = {
            let mut seen = BTreeSet::new();
            query
                .term
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .filter(|w| seen.insert(w.clone()))
                .collect()
        };
        let empty = Results { hits: Vec::new(), count: 0, next_batch: None, highlights: highlights.clone() };
        if words.is_empty() || query.rooms.is_empty() || query.keys.is_empty() {
            return Ok(empty);
        }
        // Rank pages go by offset into the ranked hits ("r<offset>"); recent pages by the
        // position the previous page stopped before ("b<pos>"), stable while events arrive.
        let (mut offset, before) = match query.next_batch.as_deref() {
            None => (0, None),
            Some(t) => match (query.order, t.split_at_checked(1)) {
                (Ordering::Rank, Some(("r", n))) => (n.parse().map_err(|_| bad_token(t))?, None),
                (Ordering::Recent, Some(("b", n))) => (0, Some(n.parse().map_err(|_| bad_token(t))?)),
                _ => return Err(bad_token(t)),
            },
        };
        let searcher = self.reader.searcher();
        let count_query = self.build_query(query, &words, None);
        let count = searcher.search(&*count_query, &Count).map_err(index_error)? as u64;
        let tantivy_query = self.build_query(query, &words, before);
        let mut readers = HashMap::new();
        let mut hits = Vec::new();
        let mut scanned = 0;
        let mut last_pos = before;
        let next_batch = 'rounds: loop {
            let round: Vec<(f64, DocAddress)> = match query.order {
                Ordering::Rank => searcher
                    .search(&*tantivy_query, &TopDocs::with_limit(HITS_PER_ROUND).and_offset(offset).order_by_score())
                    .map_err(index_error)?
                    .into_iter()
                    .map(|(score, addr)| (f64::from(score), addr))
                    .collect(),
                Ordering::Recent => {
                    let round_query = self.build_query(query, &words, last_pos);
                    searcher
                        .search(
                            &*round_query,
                            &TopDocs::with_limit(HITS_PER_ROUND).order_by_fast_field::<u64>("pos", Order::Desc),
                        )
                        .map_err(index_error)?
                        .into_iter()
                        .map(|(_, addr)| (0.0, addr))
                        .collect()
                }
            };
            let exhausted = round.len() < HITS_PER_ROUND;
            for (score, addr) in round {
                if hits.len() == query.limit || scanned == MAX_SCANNED {
                    break 'rounds Some(match query.order {
                        Ordering::Rank => format!("r{offset}"),
                        Ordering::Recent => format!("b{}", last_pos.unwrap_or(0)),
                    });
                }
                scanned += 1;
                offset += 1;
                let doc: TantivyDocument = searcher.doc(addr).map_err(index_error)?;
                let pos = doc.get_first(self.fields.pos).and_then(|v| v.as_u64()).unwrap_or(0);
                last_pos = Some(pos);
                let Some(event_id) = doc.get_first(self.fields.event_id).and_then(|v| v.as_str()) else { continue };
                let Ok(event_id) = OwnedEventId::try_from(event_id) else { continue };
                let Some(meta) = services.rooms.meta(&event_id)? else { continue };
                let room = meta.room_id.clone();
                if !readers.contains_key(&room) {
                    readers.insert(room.clone(), services.rooms.reader(user, &room)?);
                }
                let Some(event) = readers[&room].event(meta.pos, &event_id)? else { continue };
                let still_has_text = KEYS.iter().any(|(key, kind)| {
                    event["type"] == *kind && event["content"][key.trim_start_matches("content.")].is_string()
                });
                if !still_has_text || !accepts(&event) {
                    continue;
                }
                let rank = match query.order {
                    Ordering::Rank => score,
                    Ordering::Recent => 1.0,
                };
                hits.push(Hit { event, room_id: room, pos: meta.pos, rank });
            }
            if exhausted {
                break None;
            }
        };
        Ok(Results { hits, count, next_batch, highlights })
    }
}

fn bad_token(token: &str) -> Error {
    Error::invalid_param(format!("invalid next_batch token {token:?}"))
}

/// Escapes a word for tantivy's regex syntax.
fn escape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if !c.is_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The rooms a search of `user` covers: those they are joined to, as Synapse.
pub fn searchable_rooms(services: &Services, user: &ruma::UserId) -> Result<Vec<OwnedRoomId>> {
    services.rooms.rooms_of(user, "join")
}

/// Starts the indexer: it tails the event stream from where the index's last commit stopped.
pub fn start(services: Arc<Services>) {
    tokio::spawn(run(services));
}

async fn run(services: Arc<Services>) {
    let mut stream = services.rooms.subscribe();
    let mut backfilled = services.rooms.subscribe_backfilled();
    let search = &services.search;
    let mut committed = Progress { stream: *search.indexed.borrow(), backfill: *search.backfill_indexed.borrow() };
    let mut done = committed;
    let mut last_commit = Instant::now();
    loop {
        let head = *stream.borrow_and_update();
        let low = *backfilled.borrow_and_update();
        while head > done.stream || low < done.backfill {
            let worker = services.clone();
            let from = done;
            match tokio::task::spawn_blocking(move || worker.search.index_range(&worker, from, head, low)).await {
                Ok(Ok(reached)) => done = reached,
                Ok(Err(error)) => {
                    tracing::error!(%error, "indexing events for search failed; retrying");
                    done = committed;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "search indexer stopped");
                    return;
                }
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                break;
            }
        }
        if done != committed {
            let due = COMMIT_EVERY.saturating_sub(last_commit.elapsed());
            let commit_now = head > done.stream || low < done.backfill || due.is_zero();
            if !commit_now {
                tokio::select! {
                    changed = stream.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                    changed = backfilled.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                    () = tokio::time::sleep(due) => {}
                    () = services.search.commit_wanted.notified() => {}
                }
            }
            let worker = services.clone();
            match tokio::task::spawn_blocking(move || worker.search.commit(done)).await {
                Ok(Ok(())) => {
                    committed = done;
                    search.indexed.send_replace(committed.stream);
                    search.backfill_indexed.send_replace(committed.backfill);
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "committing the search index failed; re-indexing since the last commit");
                    done = committed;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    tracing::error!(%error, "search indexer stopped");
                    return;
                }
            }
            last_commit = Instant::now();
            continue;
        }
        tokio::select! {
            changed = stream.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = backfilled.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The member event content of `user` in `room` now (display name and avatar for
/// `profile_info`).
pub fn profile_in_room(services: &Services, room: &RoomId, user: &str) -> Result<(Option<String>, Option<String>)> {
    let Some(member) = services.rooms.state_event(room, &ruma::events::StateEventType::RoomMember, user)? else {
        return Ok((None, None));
    };
    let content: Value = serde_json::from_str(member.content.get()).unwrap_or_default();
    Ok((content["displayname"].as_str().map(str::to_owned), content["avatar_url"].as_str().map(str::to_owned)))
}
