// clipfarm dashboard: live updates over Server-Sent Events, actions with the CSRF token, ticking
// timers. Plain JavaScript, no build step. The server renders every fragment (escaped); this file
// only moves them into place.
(() => {
  "use strict";

  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const main = document.querySelector("main");
  const streamUrl = main?.dataset.stream || "";
  const live = document.getElementById("live");
  const QUIET_MS = 40000; // no message for this long: the connection is dead even if not closed

  const here = () => location.pathname + location.search;
  const toSignin = () => location.assign("/signin?next=" + encodeURIComponent(here()));

  // ------------------------------------------------------------------ durations that tick

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function tickText(el, now) {
    const d = el.dataset;
    switch (d.kind) {
      case "since":
        return d.from ? duration(now - Number(d.from)) : "—";
      case "ago":
        return d.from ? `${duration(now - Number(d.from))} ago` : "never";
      case "until":
        return Number(d.to) > now ? `retry in ${duration(Number(d.to) - now)}` : "retry due";
      case "eta": {
        let left = null;
        if (d.eta !== "") left = Number(d.eta) - (now - Number(d.etaAt));
        else {
          const p = Number(d.progress);
          if (p > 0.02 && d.from) left = ((now - Number(d.from)) * (1 - p)) / p;
        }
        if (left === null) return "ETA —";
        return left > 1 ? `ETA ${duration(left)}` : "ETA any moment";
      }
      default:
        return el.textContent;
    }
  }

  function tick() {
    const now = Date.now() / 1000;
    for (const el of document.querySelectorAll(".tick")) {
      const text = tickText(el, now);
      if (el.textContent !== text) el.textContent = text;
    }
  }

  // ------------------------------------------------------------------ applying a snapshot

  function syncAttributes(from, to) {
    for (const { name } of Array.from(from.attributes)) {
      if (to.hasAttribute(name)) continue;
      if (name === "open" && from.tagName === "DETAILS") continue; // the reader opened it
      from.removeAttribute(name);
    }
    for (const { name, value } of Array.from(to.attributes)) {
      if (from.getAttribute(name) === value) continue;
      from.setAttribute(name, value);
      if (name === "value" && "value" in from && from !== document.activeElement) from.value = value;
    }
  }

  // Bring `from` (in the page) to look like `to` (fresh from the server), touching only what
  // changed: a progress bar keeps its element, so its width animates instead of jumping.
  function morph(from, to) {
    if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
      from.replaceWith(to);
      return;
    }
    if (from.nodeType !== Node.ELEMENT_NODE) {
      if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
      return;
    }
    syncAttributes(from, to);
    if (from.classList.contains("tick") || from === document.activeElement) return;
    morphChildren(from, to);
  }

  function morphChildren(from, to) {
    const old = Array.from(from.childNodes);
    const fresh = Array.from(to.childNodes);
    fresh.forEach((node, i) => (i < old.length ? morph(old[i], node) : from.appendChild(node)));
    for (const node of old.slice(fresh.length)) node.remove();
  }

  function parse(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  function applyList(container, items) {
    const keep = new Set();
    items.forEach(([, html], i) => {
      const next = parse(html.trim()).firstElementChild;
      if (!next) return;
      let row = next.id ? document.getElementById(next.id) : null;
      const isNew = !(row && row.parentNode === container);
      if (isNew) row = document.adoptNode(next);
      else morph(row, next);
      const at = container.children[i];
      if (at !== row) container.insertBefore(row, at || null);
      // Animate once in the page: the parsed row belonged to the template's inert document.
      if (isNew && row.animate && !row.classList.contains("empty-row")) {
        row.animate([{ backgroundColor: "var(--flash)" }, { backgroundColor: "transparent" }], 1600);
      }
      keep.add(row);
    });
    for (const child of Array.from(container.children)) if (!keep.has(child)) child.remove();
  }

  function apply(snapshot) {
    for (const [id, html] of Object.entries(snapshot.regions || {})) {
      const el = document.getElementById(id);
      if (el) morphChildren(el, parse(html));
    }
    for (const [id, items] of Object.entries(snapshot.lists || {})) {
      const el = document.getElementById(id);
      if (el) applyList(el, items);
    }
    tick();
  }

  // ------------------------------------------------------------------ the live stream

  let source = null;
  let lastMessage = 0;
  let recovering = null;

  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.querySelector(".live-text").textContent = text;
  }

  function connect() {
    if (!streamUrl) return;
    source?.close();
    source = new EventSource(streamUrl);
    lastMessage = Date.now();
    const heard = () => {
      lastMessage = Date.now();
      setLive("live", "live");
    };
    source.addEventListener("open", heard);
    source.addEventListener("ping", heard);
    source.addEventListener("snapshot", (event) => {
      heard();
      apply(JSON.parse(event.data));
    });
    source.addEventListener("signed-out", toSignin);
    source.addEventListener("gone", (event) => {
      source.close();
      setLive("down", "gone");
      toast(event.data || "This page's subject is gone.", true);
    });
    source.addEventListener("error", () => {
      setLive("down", "reconnecting");
      // A refused stream (401, 5xx from a proxy) is closed for good: find out why, then retry.
      if (source.readyState === EventSource.CLOSED) recover();
    });
  }

  function recover() {
    if (recovering) return;
    source?.close();
    const attempt = async () => {
      try {
        const r = await fetch("/dashboard/session", { credentials: "same-origin", cache: "no-store" });
        if (r.status === 401) return toSignin();
        if (r.ok) {
          recovering = null;
          connect();
          return;
        }
      } catch (_) {
        // the board is still away
      }
      recovering = setTimeout(attempt, 1500);
    };
    recovering = setTimeout(attempt, 500);
  }

  setInterval(() => {
    tick();
    if (source && !recovering && Date.now() - lastMessage > QUIET_MS) {
      setLive("down", "reconnecting");
      recover();
    }
  }, 1000);

  // ------------------------------------------------------------------ actions

  function toast(text, bad = false) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = bad ? "toast toast-bad" : "toast";
    item.textContent = text;
    box.appendChild(item);
    setTimeout(() => item.remove(), bad ? 8000 : 3500);
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) {
      toSignin();
      return false;
    }
    if (!r.ok) {
      let detail = `${r.status} ${r.statusText}`;
      try {
        detail = (await r.json()).detail || detail;
      } catch (_) {
        // not JSON: keep the status line
      }
      throw new Error(detail);
    }
    return true;
  }

  async function act(button, body, done) {
    button.disabled = true;
    try {
      if (await post(button.dataset.url, body)) toast(done);
    } catch (error) {
      toast(error.message, true);
    } finally {
      button.disabled = false;
    }
  }

  const dialog = document.getElementById("reason-dialog");
  let pending = null;

  function ask(button) {
    if (!dialog?.showModal) return act(button, {}, `${button.textContent.trim()}: done`);
    pending = button;
    const wantsReason = button.dataset.reason !== undefined;
    document.getElementById("reason-title").textContent = button.dataset.reason || button.dataset.confirm;
    document.getElementById("reason-help").textContent = button.dataset.help || "";
    const input = document.getElementById("reason-input");
    input.value = "";
    input.closest("form").classList.toggle("no-reason", !wantsReason);
    document.getElementById("reason-confirm").textContent = button.textContent.trim();
    dialog.returnValue = "";
    dialog.showModal();
    (wantsReason ? input : document.getElementById("reason-confirm")).focus();
  }

  dialog?.addEventListener("close", () => {
    const button = pending;
    pending = null;
    if (!button || dialog.returnValue !== "confirm") return;
    const reason = document.getElementById("reason-input").value.trim();
    const body = button.dataset.reason !== undefined ? { reason } : {};
    act(button, body, `${button.textContent.trim()}: done`);
  });
  document.getElementById("reason-confirm")?.addEventListener("click", (event) => {
    event.preventDefault();
    dialog.close("confirm");
  });
  document.getElementById("reason-cancel")?.addEventListener("click", () => dialog.close("cancel"));

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    if (button.dataset.reason !== undefined || button.dataset.confirm) ask(button);
    else act(button, {}, `${button.textContent.trim()}: done`);
  });

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form.priority-form");
    if (!form) return;
    event.preventDefault();
    const value = Number(form.elements.priority.value);
    const button = form.querySelector("button");
    button.dataset.url = form.dataset.url;
    act(button, { priority: value }, `Priority set to ${value}`);
  });

  tick();
  connect();
})();
