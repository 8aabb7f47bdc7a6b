// mover ui: live progress by polling the JSON endpoints (no library). A page with a
// [data-poll] section refreshes it every second until the Backup or Restore ends, then reloads
// once to show the final state; the running list refreshes its rows and reloads when the set
// of entries changes.
"use strict";

function summaryOf(text) {
  let s = text.done;
  if (text.total) s += " of " + text.total;
  if (text.rate) s += ", " + text.rate;
  if (text.eta) s += ", ETA " + text.eta;
  return s;
}

function setField(root, name, value) {
  const el = root.querySelector('[data-field="' + name + '"]');
  if (!el) return;
  if (el.tagName === "PROGRESS") el.value = value || 0;
  else el.textContent = value == null ? "" : String(value);
}

function fetchJSON(url) {
  return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); });
}

function pollLive(section) {
  const url = section.getAttribute("data-poll");
  function tick() {
    fetchJSON(url).then(function (live) {
      // Ended: the page as the server renders it now (its report, its final numbers).
      if (live.done) { window.location.reload(); return; }
      setField(section, "phase", live.phase);
      setField(section, "reason", live.reason);
      setField(section, "message", live.message);
      setField(section, "percent", live.text.percent);
      setField(section, "summary", summaryOf(live.text));
      setField(section, "volumes", live.volumesDone + " of " + live.volumeCount + " volumes done");
      const rows = section.querySelectorAll("tr[data-volume]");
      if (rows.length !== live.volumes.length) { window.location.reload(); return; }
      live.volumes.forEach(function (v, i) {
        setField(rows[i], "phase", v.phase);
        setField(rows[i], "percent", v.text.percent);
        setField(rows[i], "summary", summaryOf(v.text));
      });
      window.setTimeout(tick, 1000);
    }).catch(function () { window.setTimeout(tick, 3000); });
  }
  window.setTimeout(tick, 1000);
}

function pollRunning(table) {
  const url = table.getAttribute("data-poll-running");
  function tick() {
    fetchJSON(url).then(function (data) {
      const rows = table.querySelectorAll("tr[data-key]");
      const keys = Array.prototype.map.call(rows, function (r) { return r.getAttribute("data-key"); });
      const now = data.running.map(function (e) { return e.kind + "/" + e.name; });
      if (keys.join("|") !== now.join("|")) { window.location.reload(); return; }
      data.running.forEach(function (e, i) {
        setField(rows[i], "phase", e.phase);
        setField(rows[i], "percent", e.text.percent);
        setField(rows[i], "summary", summaryOf(e.text));
      });
      window.setTimeout(tick, 1000);
    }).catch(function () { window.setTimeout(tick, 3000); });
  }
  window.setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("section[data-poll]").forEach(function (s) {
    if (s.getAttribute("data-done") !== "true") pollLive(s);
  });
  document.querySelectorAll("table[data-poll-running]").forEach(pollRunning);
});
