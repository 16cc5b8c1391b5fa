// The calendar widget: a room's entries by month or by week, their recurrences expanded by the
// workspace (the same expansion as `!cal list`), entries added, answered (RSVP), edited, deleted
// and one occurrence of a recurring entry skipped, through its REST API: the same code as the
// commands. Times show in the browser's zone; new entries are made in it, edits keep the entry's
// own zone. Changes by others arrive as room state the client forwards: the view reloads (after
// the edit in progress, if one is open, so nothing typed is lost).
"use strict";

const { room, lang, api, element, attempt } = Widget;
const me = Widget.params.get("user") || "";
const WORDS = {
  fr: { month: "Mois", week: "Semaine", previous: "Précédent", next: "Suivant", today: "Aujourd'hui",
        add: "Ajouter à l'agenda", title: "Titre", date: "Date", time: "Heure", duration: "Durée (minutes)",
        repeat: "Répétition", once: "Aucune", daily: "Chaque jour", weekly: "Chaque semaine", monthly: "Chaque mois",
        count: "Nombre de fois", location: "Lieu", rsvp: "Votre réponse", yes: "Oui", no: "Non", maybe: "Peut-être",
        attendees: "Participants", close: "Fermer", nothing: "Rien ce jour-là", times: "fois", until: "jusqu'au",
        days: ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."], weekOf: "Semaine du", nobody: "personne",
        edit: "Modifier l'entrée", save: "Enregistrer", skip: "Retirer cette occurrence",
        remove: "Supprimer l'entrée", confirmRemove: "Confirmer : supprimer l'entrée et toutes ses occurrences",
        zoneOf: "fuseau" },
  en: { month: "Month", week: "Week", previous: "Previous", next: "Next", today: "Today",
        add: "Add to the calendar", title: "Title", date: "Date", time: "Time", duration: "Duration (minutes)",
        repeat: "Repeat", once: "None", daily: "Every day", weekly: "Every week", monthly: "Every month",
        count: "Number of times", location: "Location", rsvp: "Your answer", yes: "Yes", no: "No", maybe: "Maybe",
        attendees: "Attendees", close: "Close", nothing: "Nothing that day", times: "times", until: "until",
        days: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], weekOf: "Week of", nobody: "nobody",
        edit: "Edit the entry", save: "Save", skip: "Remove this occurrence",
        remove: "Delete the entry", confirmRemove: "Confirm: delete the entry and all its occurrences",
        zoneOf: "zone" },
};
const words = WORDS[lang];
const locale = lang === "en" ? "en-GB" : "fr-FR";
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || document.body.dataset.zone;
const path = `/rooms/${Widget.enc(room)}/calendar`;
const calendar = document.getElementById("calendar");
const detail = document.getElementById("detail");
const period = document.getElementById("period");

// The server's today (its clock and zone), so the page and `!cal list` agree.
const [ty, tm, td] = document.body.dataset.today.split("-").map(Number);
const today = new Date(ty, tm - 1, td);
let mode = "month";
let anchor = new Date(today);
let entries = {};
let selected = null;
// A reload that arrived while the edit form was open: done once it is closed.
let stale = false;

const pad = (n) => String(n).padStart(2, "0");
const dayKey = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const addDays = (d, n) => new Date(d.getFullYear(), d.getMonth(), d.getDate() + n);
const monday = (d) => addDays(d, -((d.getDay() + 6) % 7));

// The days shown: the weeks covering the month, or the week of the anchor.
function range() {
  if (mode === "week") {
    const start = monday(anchor);
    return { start, end: addDays(start, 7) };
  }
  const first = new Date(anchor.getFullYear(), anchor.getMonth(), 1);
  const last = new Date(anchor.getFullYear(), anchor.getMonth() + 1, 0);
  return { start: monday(first), end: addDays(monday(last), 7) };
}

function ruleText(rule) {
  if (!rule) return "";
  const parts = Object.fromEntries(rule.split(";").map((p) => p.split("=")));
  const freq = { DAILY: words.daily, WEEKLY: words.weekly, MONTHLY: words.monthly }[parts.FREQ] || rule;
  let text = freq;
  if (parts.BYDAY) text += ` (${parts.BYDAY})`;
  if (parts.COUNT) text += `, ${parts.COUNT} ${words.times}`;
  if (parts.UNTIL) text += `, ${words.until} ${parts.UNTIL.slice(0, 4)}-${parts.UNTIL.slice(4, 6)}-${parts.UNTIL.slice(6, 8)}`;
  return text;
}

const clock = (d) => d.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });

function showDetail(occurrence, focus) {
  // Redrawn by a reload while the keyboard was in it: the focus stays in it.
  const refocus = focus || detail.contains(document.activeElement);
  selected = occurrence;
  const entry = entries[occurrence.uid] || {};
  const start = new Date(occurrence.start);
  const end = new Date(occurrence.end);
  const answer = ((entry.attendees || {})[me] || {}).rsvp;
  const buttons = element("div", { role: "group", "aria-labelledby": "rsvp-label", class: "rsvp" });
  for (const choice of ["yes", "no", "maybe"]) {
    const button = element("button", { type: "button", "data-rsvp": choice, "aria-pressed": String(answer === choice) },
      words[choice]);
    button.addEventListener("click", () => attempt(async () => {
      await api("POST", `${path}/${Widget.enc(occurrence.uid)}/rsvp`, { response: choice });
      await load();
    }));
    buttons.append(button);
  }
  const attendees = Object.entries(entry.attendees || {}).map(([user, a]) => `${user} (${words[a.rsvp] || a.rsvp})`);
  const close = element("button", { type: "button", class: "close" }, words.close);
  close.addEventListener("click", hideDetail);
  const entryPath = `${path}/${Widget.enc(occurrence.uid)}`;
  // One occurrence of a recurring entry removed (an exception), the others kept.
  const skip = entry.rrule
    ? element("button", { type: "button", "data-action": "skip" }, words.skip)
    : null;
  skip?.addEventListener("click", () => attempt(async () => {
    await api("POST", `${entryPath}/skip`, { start: occurrence.start });
    hideDetail();
    await load();
  }));
  // Deleting asks once more: the entry goes with all its occurrences.
  const remove = element("button", { type: "button", "data-action": "delete", "aria-expanded": "false" }, words.remove);
  const confirm = element("button", { type: "button", "data-action": "confirm-delete", hidden: "" }, words.confirmRemove);
  remove.addEventListener("click", () => {
    confirm.hidden = false;
    remove.setAttribute("aria-expanded", "true");
    confirm.focus();
  });
  confirm.addEventListener("click", () => attempt(async () => {
    await api("DELETE", entryPath);
    hideDetail();
    await load();
  }));
  detail.replaceChildren(
    element("h2", { id: "detail-title", tabindex: "-1" }, occurrence.title),
    element("p", {}, `${start.toLocaleDateString(locale, { weekday: "long", day: "numeric", month: "long" })}, ${clock(start)} – ${clock(end)}`),
    entry.location ? element("p", {}, `${words.location}${lang === "en" ? ":" : " :"} ${entry.location}`) : null,
    entry.rrule ? element("p", { class: "rule" }, ruleText(entry.rrule)) : null,
    element("p", {}, `${words.attendees}: ${attendees.join(", ") || words.nobody}`),
    element("p", { id: "rsvp-label" }, words.rsvp),
    buttons,
    entry.uid ? editor(entry, entryPath) : null,
    element("div", { class: "actions" }, skip, remove, confirm, close),
  );
  detail.dataset.uid = occurrence.uid;
  detail.hidden = false;
  // Chosen by the user (not redrawn by a reload): the keyboard goes to the details.
  if (refocus) detail.querySelector("#detail-title").focus();
}

function hideDetail() {
  selected = null;
  detail.hidden = true;
}

// `20261202T100000` → ["2026-12-02", "10:00"], and minutes between two such values.
const localParts = (v) => [`${v.slice(0, 4)}-${v.slice(4, 6)}-${v.slice(6, 8)}`, `${v.slice(9, 11)}:${v.slice(11, 13)}`];
const localMs = (v) => Date.UTC(+v.slice(0, 4), +v.slice(4, 6) - 1, +v.slice(6, 8), +v.slice(9, 11), +v.slice(11, 13));

// The entry's edit form: its times in its own zone (named when it is not the browser's); one PATCH.
function editor(entry, entryPath) {
  const [date, time] = localParts(entry.dtstart.value);
  const minutes = Math.round((localMs(entry.dtend.value) - localMs(entry.dtstart.value)) / 60000);
  const inZone = entry.dtstart.tzid !== zone ? ` (${words.zoneOf} ${entry.dtstart.tzid})` : "";
  const field = (name, label, input) => {
    input.id = `edit-${name}`;
    input.name = name;
    return element("p", { class: "field" }, element("label", { for: input.id }, label), input);
  };
  const title = element("input", { required: "", maxlength: "500", autocomplete: "off", value: entry.title });
  const form = element("form", { class: "edit", "data-uid": entry.uid },
    field("title", words.title, title),
    field("date", `${words.date}${inZone}`, element("input", { type: "date", required: "", value: date })),
    field("time", `${words.time}${inZone}`, element("input", { type: "time", required: "", value: time })),
    field("duration", words.duration, element("input", { type: "number", min: "5", max: "20160", step: "5", value: String(minutes) })),
    field("location", words.location, element("input", { maxlength: "500", autocomplete: "off", value: entry.location || "" })),
    element("button", { type: "submit" }, words.save));
  const details = element("details", { class: "edit-entry" }, element("summary", {}, words.edit), form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = form.elements;
    const body = {
      title: f.title.value.trim(),
      start: `${f.date.value}T${f.time.value}`,
      duration_minutes: Number(f.duration.value || minutes),
      location: f.location.value.trim(),
    };
    attempt(async () => {
      await api("PATCH", entryPath, body);
      details.open = false;
      hideDetail();
      await load();
    });
  });
  details.addEventListener("toggle", () => {
    if (!details.open && stale) attempt(load);
  });
  return details;
}

function render(occurrences) {
  const { start, end } = range();
  const byDay = new Map();
  for (const o of occurrences) {
    const key = dayKey(new Date(o.start));
    if (!byDay.has(key)) byDay.set(key, []);
    byDay.get(key).push(o);
  }
  period.textContent = mode === "month"
    ? anchor.toLocaleDateString(locale, { month: "long", year: "numeric" })
    : `${words.weekOf} ${start.toLocaleDateString(locale, { day: "numeric", month: "long", year: "numeric" })}`;
  const head = element("div", { class: "weekdays", "aria-hidden": "true" }, ...words.days.map((d) => element("span", {}, d)));
  const days = element("ol", { class: `days ${mode}` });
  for (let d = new Date(start); d < end; d = addDays(d, 1)) {
    const key = dayKey(d);
    const list = byDay.get(key) || [];
    const outside = mode === "month" && d.getMonth() !== anchor.getMonth();
    const classes = ["day", list.length ? "" : "free", outside ? "outside" : "", key === dayKey(today) ? "today" : ""];
    const label = d.toLocaleDateString(locale, { weekday: "long", day: "numeric", month: "long" });
    const items = element("ul", {});
    for (const o of list) {
      const button = element("button", { type: "button", class: "occurrence", "data-uid": o.uid },
        `${clock(new Date(o.start))} ${o.title}`);
      button.addEventListener("click", () => showDetail(o, true));
      items.append(element("li", {}, button));
    }
    if (!list.length) items.append(element("li", { class: "sr-only" }, words.nothing));
    days.append(element("li", { class: classes.filter(Boolean).join(" "), "data-day": key, "aria-label": label },
      element("h3", {}, element("time", { datetime: key }, `${words.days[(d.getDay() + 6) % 7]} ${d.getDate()}`)), items));
  }
  calendar.replaceChildren(head, days);
  if (selected) {
    const again = occurrences.find((o) => o.uid === selected.uid && o.start === selected.start);
    if (again) showDetail(again, false);
    else hideDetail();
  }
}

const ticket = Widget.tickets();

async function load() {
  stale = false;
  const { start, end } = range();
  const query = `?from=${Widget.enc(start.toISOString())}&to=${Widget.enc(end.toISOString())}`;
  const newest = ticket();
  const answer = await api("GET", `${path}${query}`);
  if (!newest()) return;
  entries = Object.fromEntries(answer.entries.map((e) => [e.uid, e]));
  render(answer.occurrences);
  Widget.loaded();
}

function toolbar() {
  const nav = document.getElementById("toolbar");
  const button = (label, action, attributes) => {
    const b = element("button", { type: "button", ...attributes }, label);
    b.addEventListener("click", () => attempt(async () => {
      action();
      await load();
    }));
    return b;
  };
  const modes = element("div", { role: "group", "aria-label": `${words.month} / ${words.week}` });
  const month = button(words.month, () => setMode("month"), { "data-mode": "month", "aria-pressed": "true" });
  const week = button(words.week, () => setMode("week"), { "data-mode": "week", "aria-pressed": "false" });
  function setMode(m) {
    mode = m;
    month.setAttribute("aria-pressed", String(m === "month"));
    week.setAttribute("aria-pressed", String(m === "week"));
  }
  modes.append(month, week);
  const step = (n) => () => {
    anchor = mode === "month" ? new Date(anchor.getFullYear(), anchor.getMonth() + n, 1) : addDays(anchor, 7 * n);
  };
  nav.append(modes,
    button(words.previous, step(-1), { "data-step": "previous" }),
    button(words.today, () => { anchor = new Date(today); }, { "data-step": "today" }),
    button(words.next, step(1), { "data-step": "next" }));
}

function form() {
  const add = document.getElementById("add");
  const field = (name, label, input) => {
    input.id = `new-${name}`;
    input.name = name;
    return element("p", { class: "field" }, element("label", { for: input.id }, label), input);
  };
  const repeat = element("select", {});
  for (const [value, label] of [["", words.once], ["FREQ=DAILY", words.daily], ["FREQ=WEEKLY", words.weekly], ["FREQ=MONTHLY", words.monthly]]) {
    repeat.append(element("option", { value }, label));
  }
  add.append(
    element("h2", {}, words.add),
    field("title", words.title, element("input", { required: "", maxlength: "500", autocomplete: "off" })),
    field("date", words.date, element("input", { type: "date", required: "", value: dayKey(today) })),
    field("time", words.time, element("input", { type: "time", required: "", value: "10:00" })),
    field("duration", words.duration, element("input", { type: "number", min: "5", max: "20160", step: "5", value: "60" })),
    field("repeat", words.repeat, repeat),
    field("count", words.count, element("input", { type: "number", min: "1", max: "500" })),
    field("location", words.location, element("input", { maxlength: "500", autocomplete: "off" })),
    element("button", { type: "submit" }, words.add),
  );
  add.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = add.elements;
    let rrule = f.repeat.value;
    if (rrule && f.count.value) rrule += `;COUNT=${f.count.value}`;
    const body = {
      title: f.title.value.trim(),
      start: `${f.date.value}T${f.time.value}`,
      duration_minutes: Number(f.duration.value || 60),
      time_zone: zone,
      location: f.location.value.trim(),
    };
    if (rrule) body.rrule = rrule;
    await attempt(async () => {
      await api("POST", path, body);
      add.reset();
      await load();
    });
  });
}

toolbar();
form();
Widget.start({
  capabilities: [`org.matrix.msc2762.timeline:${room}`, "org.matrix.msc2762.receive.state_event:org.hemicycle.calendar.event"],
  onUpdate: () => {
    if (detail.querySelector("details[open]")) stale = true;
    else attempt(load);
  },
  ready: load,
});
