// genq web UI. Plain JavaScript, no build step, no third-party code: it talks only to
// genq's public REST + Server-Sent Events API on this origin.
//
// Pages (history API): /                 functions
//                      /functions/{name} a form made from the function's JSON schema
//                      /jobs/{id}        the form plus the live job view (shareable)
//                      /jobs             the jobs list, live
//                      /dashboard        live operations figures
"use strict";

(() => {
  // ---------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------
  const $ = (selector, root = document) => root.querySelector(selector);

  /**
   * Create an element: h("a", {href: "/", class: "x"}, "text", child).
   *
   * The only way this UI builds DOM, and job data (input, output, errors, names) only
   * ever reaches it as text nodes or attribute values, never as markup. Two guards keep
   * it that way: an on* attribute must be a function (a string would be inline script),
   * and a URL attribute must not run code (javascript: and the like are dropped; data:
   * only as an image source, for upload previews).
   */
  const SAFE_URL_PROTOCOLS = new Set(["http:", "https:", "blob:"]);
  function safeUrl(value, key) {
    try {
      const { protocol } = new URL(value, location.href);
      return SAFE_URL_PROTOCOLS.has(protocol) || (key === "src" && protocol === "data:") ? value : null;
    } catch {
      return null;
    }
  }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.toLowerCase().startsWith("on")) {
        if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
        el.addEventListener(key.slice(2), value);
      } else if (key === "href" || key === "src") {
        const url = safeUrl(String(value), key);
        if (url !== null) el.setAttribute(key, url);
      } else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.firstChild.remove();
    return el;
  }

  let uniqueCounter = 0;
  const uid = (prefix) => `${prefix}-${++uniqueCounter}`;

  function randomKey() {
    if (window.crypto && crypto.randomUUID && window.isSecureContext) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const shortId = (id) => String(id).slice(0, 8);

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 10) return `${seconds.toFixed(1)} s`;
    if (seconds < 60) return `${Math.round(seconds)} s`;
    const m = Math.floor(seconds / 60);
    const s = Math.round(seconds % 60);
    if (m < 60) return s ? `${m} min ${s} s` : `${m} min`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function formatClock(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
    const total = Math.max(0, Math.round(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const secs = String(total % 60).padStart(2, "0");
    return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${secs}` : `${minutes}:${secs}`;
  }

  function formatAgo(ts) {
    if (!ts) return "";
    const seconds = Math.max(0, Date.now() / 1000 - ts);
    if (seconds < 5) return "just now";
    if (seconds < 60) return `${Math.floor(seconds)} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return new Date(ts * 1000).toLocaleDateString();
  }

  const formatTime = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "");

  // Sizes and rates in SI units (1 kB = 1000 B), as downloads and disks count them.
  function formatBytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return "";
    let value = Number(n);
    if (Math.abs(value) < 1000) return `${Math.round(value)} B`;
    let unit = "B";
    for (const next of ["kB", "MB", "GB", "TB"]) {
      if (Math.abs(value) < 1000) break;
      value /= 1000;
      unit = next;
    }
    return `${value.toFixed(1)} ${unit}`;
  }

  const BYTE_UNITS = new Set(["B", "byte", "bytes"]);
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

  /** A count in a progress unit: bytes as kB/MB/GB, large counts shortened (12.3K). */
  function formatAmount(n, unit) {
    if (unit && BYTE_UNITS.has(unit)) return formatBytes(n);
    const text = Math.abs(n) >= 100000 ? compact.format(n) : formatNumber(n);
    return unit ? `${text} ${unit}` : text;
  }

  /** A rate per second: "4.0 MB/s", "12.5 tokens/s", "1.2M it/s". */
  function formatRate(rate, unit) {
    if (unit && BYTE_UNITS.has(unit)) return `${formatBytes(rate)}/s`;
    const text = Math.abs(rate) >= 100000 ? compact.format(rate)
      : formatNumber(Math.abs(rate) >= 100 ? Math.round(rate) : rate, 1);
    return `${text} ${unit || "it"}/s`;
  }

  function formatNumber(n, digits = 2) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    if (Number.isInteger(n)) return n.toLocaleString();
    return Number(n.toFixed(digits)).toLocaleString();
  }

  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);
  const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "expired"];
  const EVENT_TYPES = ["queued", "started", "progress", "output", "log", "retrying",
    "succeeded", "failed", "cancelled", "expired"];

  function statusBadge(status) {
    return h("span", { class: `status status-${status}`, dataset: { status } }, status);
  }

  /** A "Copy" button that puts getText() on the clipboard and says whether it worked. */
  function copyButton(getText, label) {
    const button = h("button", { type: "button", class: "btn btn-ghost btn-small copy-button",
      "aria-label": label, title: label }, "Copy");
    let timer = null;
    button.addEventListener("click", async () => {
      let said = "Copied";
      try {
        if (!navigator.clipboard) throw new Error("no clipboard");
        await navigator.clipboard.writeText(String(getText() ?? ""));
      } catch {
        said = "Copy failed";
      }
      button.textContent = said;
      button.dataset.copied = said === "Copied" ? "yes" : "no";
      clearTimeout(timer);
      timer = setTimeout(() => { button.textContent = "Copy"; delete button.dataset.copied; }, 2000);
    });
    return button;
  }

  /** A job's input in a few words, to tell its row apart: the prompt or message, else
   * the first text input, else its fields as "name: value"; cut to `max` characters. */
  const SUMMARY_KEYS = ["prompt", "message", "text", "query", "question", "input", "url"];
  function inputSummary(input, max = 60) {
    if (!input || typeof input !== "object") return "";
    const texts = (v) => (typeof v === "string" && v && v.length < 4000 ? v
      : Array.isArray(v) && v.length && v.every((x) => typeof x === "string") ? v.join(" · ") : null);
    const keys = [...SUMMARY_KEYS.filter((k) => k in input), ...Object.keys(input)];
    const key = keys.find((k) => texts(input[k]));
    const pairs = () => Object.entries(input).map(([k, v]) => `${k}: ${
      v !== null && typeof v === "object" ? JSON.stringify(v).slice(0, 200) : String(v).slice(0, 200)}`).join(", ");
    const text = (key ? texts(input[key]) : pairs()).replace(/\s+/g, " ").trim();
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function isArtifact(value) {
    return value && typeof value === "object" && !Array.isArray(value)
      && Object.keys(value).length === 1 && value.artifact && typeof value.artifact === "object"
      && "id" in value.artifact;
  }

  function collectArtifacts(value, found = []) {
    if (isArtifact(value)) found.push(value.artifact);
    else if (Array.isArray(value)) value.forEach((v) => collectArtifacts(v, found));
    else if (value && typeof value === "object") {
      Object.values(value).forEach((v) => collectArtifacts(v, found));
    }
    return found;
  }

  function onlyArtifacts(value) {
    if (isArtifact(value)) return true;
    if (Array.isArray(value)) return value.length > 0 && value.every(onlyArtifacts);
    return false;
  }

  // ---------------------------------------------------------------------------------
  // API access and the API key
  // ---------------------------------------------------------------------------------
  const KEY_STORAGE = "genq.apiKey";

  const auth = {
    get key() {
      try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
    },
    save(key) {
      try { localStorage.setItem(KEY_STORAGE, key); } catch { /* private mode */ }
      updateKeyButton();
    },
    forget() {
      try { localStorage.removeItem(KEY_STORAGE); } catch { /* private mode */ }
      session.end();
      updateKeyButton();
    },
    required: false,
    pending: null,
    /** Ask for a key (one dialog for every caller); resolves once one is saved. */
    ask(message) {
      auth.required = true;
      updateKeyButton();
      if (!auth.pending) {
        auth.pending = openKeyDialog(message).finally(() => { auth.pending = null; });
      }
      return auth.pending;
    },
  };

  /**
   * The UI's session. EventSource, <img> and download links cannot send a header, and a
   * key in their URLs would land in every access log on the way; so the key goes once,
   * in the Authorization header, to POST /api/session, whose answer sets an HttpOnly,
   * SameSite=Strict cookie that those requests carry instead (reads only; it expires
   * after an hour and is renewed well before). No URL the page requests holds the key.
   */
  const SESSION_RENEW_MS = 20 * 60 * 1000; // renew a session that ends within this
  const session = {
    expiresAt: 0, // ms; Infinity on a server without keys
    pending: null,
    /** Sign in with `key`; throws ApiError (401: the key is not valid) or NetworkError. */
    async start(key) {
      const { response, data } = await send("/api/session", { method: "POST", key });
      if (!response.ok) throw new ApiError(response.status, data);
      session.expiresAt = data.expires_at == null ? Infinity : data.expires_at * 1000;
      return data;
    },
    /**
     * A live session for the saved key before URLs without headers are used: renewed
     * when it ends soon, or when `force`d (a stream failed: the server may have lost it).
     * Never throws: the request that follows reports whatever is wrong.
     */
    ensure(force = false) {
      if (!auth.key) return Promise.resolve();
      if (!force && session.expiresAt - Date.now() > SESSION_RENEW_MS) return Promise.resolve();
      if (!session.pending) {
        session.pending = session.start(auth.key).catch(() => {})
          .finally(() => { session.pending = null; });
      }
      return session.pending;
    },
    end() {
      session.expiresAt = 0;
      fetch("/api/session", { method: "DELETE" }).catch(() => {});
    },
  };

  class ApiError extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(error.message || `the server answered HTTP ${status}`);
      this.status = status;
      this.code = error.code || "http_error";
      this.error = error;
    }
  }

  class NetworkError extends Error {}
  class KeyDeclined extends Error {}

  /** One request with the key (the saved one unless given) in the Authorization header:
   * the response and its body as JSON; NetworkError if the server cannot be reached. */
  async function send(path, { method = "GET", body, headers = {}, signal, key = auth.key } = {}) {
    const sent = { Accept: "application/json", ...headers };
    if (key) sent.Authorization = `Bearer ${key}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    let response;
    let text;
    try {
      response = await fetch(path, {
        method, headers: sent, signal, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      text = await response.text();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new NetworkError("the server could not be reached");
    }
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = { error: { message: text.slice(0, 300) } }; }
    }
    return { response, data };
  }

  /** JSON API call. 401 asks for the key and retries; errors throw ApiError. */
  async function api(path, options = {}) {
    for (;;) {
      const { response, data } = await send(path, options);
      if (response.status === 401) {
        await auth.ask(data && data.error && data.error.message);
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, data);
      return data;
    }
  }

  // -- the key dialog -------------------------------------------------------------------
  function updateKeyButton() {
    const button = $("#key-button");
    if (!button) return;
    button.hidden = !(auth.required || auth.key);
    button.textContent = auth.key ? "API key ✓" : "API key";
    button.setAttribute("aria-label", auth.key ? "Change API key (one is saved)" : "Enter API key");
  }

  function openKeyDialog(message) {
    const dialog = $("#key-dialog");
    const input = $("#key-input");
    $("#key-message").textContent = message
      ? `${message}.`.replace(/\.\.$/, ".")
      : "This server requires an API key.";
    input.value = "";
    return new Promise((resolve, reject) => {
      const done = (ok) => {
        form.removeEventListener("submit", onSubmit);
        cancel.removeEventListener("click", onCancel);
        forget.removeEventListener("click", onForget);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        if (ok) resolve(); else reject(new KeyDeclined("an API key is required"));
      };
      const form = $("#key-form");
      const cancel = $("#key-cancel");
      const forget = $("#key-forget");
      const save = $("#key-save");
      const onSubmit = async (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) { input.focus(); return; }
        save.disabled = true;
        try {
          await session.start(key); // the key is checked here, and never sent in a URL
        } catch (error) {
          $("#key-message").textContent = `${error.message}.`.replace(/\.\.$/, ".");
          input.focus();
          return;
        } finally {
          save.disabled = false;
        }
        auth.save(key);
        done(true);
      };
      const onCancel = (event) => { event.preventDefault(); done(false); };
      const onForget = () => { auth.forget(); input.value = ""; input.focus(); };
      form.addEventListener("submit", onSubmit);
      cancel.addEventListener("click", onCancel);
      forget.addEventListener("click", onForget);
      dialog.addEventListener("cancel", onCancel);
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }

  // ---------------------------------------------------------------------------------
  // Desktop notifications for jobs started from this browser
  // ---------------------------------------------------------------------------------
  /**
   * When a job submitted from this browser ends while its tab is hidden, a desktop
   * notification says how. Opt-in with the form's "Notify me" toggle: the browser's
   * permission prompt appears only on that click, never on page load. The ids of the
   * jobs this browser submitted are kept (the last 200) so a reloaded job page notifies too.
   */
  const NOTIFY_PREF = "genq.notify";
  const MY_JOBS = "genq.myJobs";
  const notifier = {
    get supported() { return "Notification" in window; },
    get permission() { return notifier.supported ? Notification.permission : "denied"; },
    get wanted() {
      try { return localStorage.getItem(NOTIFY_PREF) === "on"; } catch { return false; }
    },
    get on() { return notifier.wanted && notifier.permission === "granted"; },
    /** Turn notifications on (asks the browser on this user action) or off: whether on. */
    async set(on) {
      let allowed = false;
      if (on && notifier.supported) {
        let permission = Notification.permission;
        if (permission === "default") {
          try { permission = await Notification.requestPermission(); } catch { permission = "denied"; }
        }
        allowed = permission === "granted";
      }
      try { localStorage.setItem(NOTIFY_PREF, allowed ? "on" : "off"); } catch { /* private mode */ }
      return allowed;
    },
    mine() {
      try { return JSON.parse(localStorage.getItem(MY_JOBS) || "[]"); } catch { return []; }
    },
    remember(jobId) {
      const ids = notifier.mine().filter((id) => id !== jobId);
      ids.push(jobId);
      try { localStorage.setItem(MY_JOBS, JSON.stringify(ids.slice(-200))); } catch { /* private mode */ }
    },
    told: new Set(), // ids already notified (a job page and the jobs list both see the end)
    /** A job reached its end (a job view's or the jobs feed's `job`): notify if it is
     * ours, wanted, and nobody is looking. */
    ended(job) {
      if (!notifier.on || document.visibilityState !== "hidden" || !TERMINAL.has(job.status)) return;
      if (notifier.told.has(job.id) || !notifier.mine().includes(job.id)) return;
      notifier.told.add(job.id);
      const { status, id } = job;
      const body = status === "succeeded" ? "Finished. Open the tab to see the result."
        : status === "failed" ? `Failed: ${(job.error && job.error.message) || "see the job page"}`
          : status === "cancelled" ? "Cancelled." : "Expired in the queue.";
      try {
        const note = new Notification(`${jobTitle({ job, status })} · genq`, { body, tag: `genq-${id}` });
        note.onclick = () => { window.focus(); note.close(); };
      } catch { /* a browser that only notifies from a service worker */ }
    },
  };

  /**
   * The ticket of each submission this browser made (the last 200), kept with its job id
   * so its Cancel, even after a reload, lets go of this browser's submission only: a job
   * that identical submissions joined (dedupe) goes on for the other browsers. A job
   * opened without one (from the jobs list) is cancelled outright.
   */
  const TICKETS = "genq.tickets";
  const tickets = {
    all() {
      try {
        const pairs = JSON.parse(localStorage.getItem(TICKETS) || "[]");
        return Array.isArray(pairs) ? pairs.filter((p) => Array.isArray(p) && typeof p[1] === "string") : [];
      } catch { return []; }
    },
    save(pairs) {
      try { localStorage.setItem(TICKETS, JSON.stringify(pairs.slice(-200))); } catch { /* private mode */ }
    },
    /** A ticket this browser holds for the job (two tabs may each hold one), or null. */
    of(jobId) {
      const held = tickets.all().filter(([id]) => id === jobId);
      return held.length ? held[held.length - 1][1] : null;
    },
    remember(jobId, ticket) {
      tickets.save([...tickets.all().filter(([, t]) => t !== ticket), [jobId, ticket]]);
    },
    forget(ticket) { tickets.save(tickets.all().filter(([, t]) => t !== ticket)); },
  };

  /** A job's state in a few characters, for the tab title: "42% render", "done: render". */
  function jobTitle(view) {
    const fn = view.job.function;
    switch (view.status) {
      case "queued": return `queued: ${fn}`;
      case "running": return view.fraction !== null && view.fraction !== undefined
        ? `${Math.round(view.fraction * 100)}% ${fn}` : `running: ${fn}`;
      case "succeeded": return `done: ${fn}`;
      default: return `${view.status}: ${fn}`;
    }
  }

  // ---------------------------------------------------------------------------------
  // Live streams: EventSource with our own reconnect, backoff and resume
  // ---------------------------------------------------------------------------------
  /**
   * Follows an SSE endpoint. EventSource retries network errors by itself but gives up
   * for good on an HTTP error (a 502 from a proxy, a 401, a server that is restarting),
   * so every error closes it and we reconnect ourselves with exponential backoff; the
   * URL is rebuilt each time, so a job stream resumes with ?last_event_id=<last seen>.
   * onState receives "connecting" | "live" | "reconnecting" | "closed".
   */
  class LiveStream {
    constructor({ url, types, onEvent, onState, beforeReconnect }) {
      this.url = url;
      this.types = types;
      this.onEvent = onEvent;
      this.onState = onState || (() => {});
      this.beforeReconnect = beforeReconnect;
      this.source = null;
      this.timer = null;
      this.failures = 0;
      this.stopped = false;
      this.everOpened = false;
      this.attempts = 0;
    }

    start() {
      this.stopped = false;
      this.open();
    }

    open() {
      if (this.stopped) return;
      this.onState(this.everOpened ? "reconnecting" : "connecting");
      const attempt = ++this.attempts;
      // The stream authenticates with the session cookie; after a failure the server may
      // have lost the session (a restart with other keys, an expiry): renew it first.
      session.ensure(this.failures > 0).then(() => {
        if (!this.stopped && attempt === this.attempts) this.connect();
      });
    }

    connect() {
      const source = new EventSource(this.url());
      this.source = source;
      source.onopen = () => {
        if (this.source !== source) return;
        this.everOpened = true;
        this.failures = 0;
        this.onState("live");
      };
      for (const type of this.types) {
        source.addEventListener(type, (event) => {
          if (this.source === source && !this.stopped) this.onEvent(type, event);
        });
      }
      source.onerror = () => {
        if (this.source !== source) return;
        source.close();
        this.source = null;
        if (this.stopped) return;
        this.everOpened = true; // from now on a new connection is a *re*connection
        this.onState("reconnecting");
        this.schedule();
      };
    }

    schedule() {
      clearTimeout(this.timer);
      const base = Math.min(5000, 300 * 2 ** this.failures);
      this.failures += 1;
      const delay = base / 2 + Math.random() * (base / 2);
      this.timer = setTimeout(() => this.reconnect(), delay);
    }

    async reconnect() {
      if (this.stopped) return;
      if (this.beforeReconnect) {
        let verdict;
        try {
          verdict = await this.beforeReconnect();
        } catch (error) {
          if (this.stopped) return;
          if (error instanceof KeyDeclined) { this.stop(); return; }
          this.schedule(); // the server is still away (or answers 5xx): try again later
          return;
        }
        if (verdict === false || this.stopped) { this.stop(); return; }
      }
      this.open();
    }

    /** Drop the connection and open a new one now (it looked stalled). */
    restart() {
      if (this.stopped) return;
      clearTimeout(this.timer);
      if (this.source) this.source.close();
      this.source = null;
      this.open();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.source) this.source.close();
      this.source = null;
      this.onState("closed");
    }
  }

  function connectionIndicator(label) {
    const text = h("span", { class: "conn-label" }, "connecting…");
    const el = h("span", {
      class: "conn", role: "status", "aria-live": "polite", dataset: { state: "connecting" },
      title: label,
    }, h("span", { class: "conn-dot", "aria-hidden": "true" }), text);
    const labels = {
      connecting: "connecting…", live: "live", reconnecting: "reconnecting…",
      closed: "complete", offline: "offline",
    };
    el.set = (state, override) => {
      if (el.dataset.state !== state) {
        const history = el.dataset.history ? el.dataset.history.split(" ") : [];
        history.push(state);
        el.dataset.history = history.slice(-20).join(" ");
      }
      el.dataset.state = state;
      text.textContent = override || labels[state] || state;
    };
    el.dataset.history = "connecting";
    return el;
  }

  // ---------------------------------------------------------------------------------
  // Functions (cached list) and the sidebar
  // ---------------------------------------------------------------------------------
  let functionsPromise = null;

  function loadFunctions() {
    if (!functionsPromise) {
      functionsPromise = api("/api/functions").then((data) => {
        const list = data.functions || [];
        renderSidebar(list);
        return list;
      });
      functionsPromise.catch(() => { functionsPromise = null; });
    }
    return functionsPromise;
  }

  function renderSidebar(functions) {
    const list = $("#function-list");
    clear(list);
    for (const fn of functions) {
      list.append(h("li", null, h("a", { href: `/functions/${encodeURIComponent(fn.name)}`,
        dataset: { fn: fn.name } }, fn.name)));
    }
    markActiveFunction();
  }

  let activeFunction = null;
  function markActiveFunction() {
    for (const a of document.querySelectorAll("#function-list a")) {
      if (a.dataset.fn === activeFunction) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  function isChat(fn) {
    const props = (fn.input_schema && fn.input_schema.properties) || {};
    return "message" in props && "history" in props;
  }

  /** Docstring text with ``code`` / `code` spans as <code>. */
  function richText(text) {
    return String(text).split(/``([^`]+)``|`([^`]+)`/).map((part, i) => {
      if (part === undefined) return null;
      return i % 3 === 0 ? part : h("code", null, part);
    });
  }

  function firstLine(text) {
    return (text || "").split(/\n\s*\n/)[0].replace(/\s+/g, " ").trim();
  }

  function functionBadges(fn) {
    if (fn.missing) return null;
    const o = fn.options || {};
    const badges = [];
    if (isChat(fn)) badges.push(["chat", "accent"]);
    else if (fn.streams) badges.push(["streaming", "accent"]);
    badges.push([fn.kind === "coroutine" || fn.kind === "async_generator" ? "async" : "sync", ""]);
    badges.push([`concurrency ${o.concurrency}`, ""]);
    if (o.timeout) badges.push([`timeout ${formatDuration(o.timeout)}`, ""]);
    if (o.retries) badges.push([`retries ${o.retries}`, ""]);
    if (o.cache) badges.push(["cached", ""]);
    return h("ul", { class: "badges", "aria-label": "Options" },
      badges.map(([text, kind]) => h("li", { class: `badge ${kind ? `badge-${kind}` : ""}` }, text)));
  }

  // ---------------------------------------------------------------------------------
  // Forms generated from JSON schemas
  // ---------------------------------------------------------------------------------
  function resolveSchema(schema, root) {
    let s = schema || {};
    let nullable = false;
    const outer = s;
    if (s.$ref) {
      const name = s.$ref.split("/").pop();
      const target = (root.$defs || root.definitions || {})[name] || {};
      s = { ...target, ...s };
      delete s.$ref;
    }
    if (Array.isArray(s.allOf) && s.allOf.length === 1) {
      s = { ...resolveSchema(s.allOf[0], root).schema, ...s };
      delete s.allOf;
    }
    const union = s.anyOf || s.oneOf;
    if (Array.isArray(union)) {
      const rest = union.filter((option) => option.type !== "null");
      nullable = rest.length < union.length;
      if (rest.length === 1) {
        const inner = resolveSchema(rest[0], root);
        s = { ...inner.schema, title: outer.title, description: outer.description,
          default: outer.default };
        nullable = nullable || inner.nullable;
      }
    }
    if (Array.isArray(s.type)) {
      const types = s.type.filter((t) => t !== "null");
      nullable = nullable || types.length < s.type.length;
      s = { ...s, type: types.length === 1 ? types[0] : types };
    }
    return { schema: s, nullable };
  }

  const LONG_TEXT = /prompt|text|message|content|description|body|query|question|system|instruction/i;

  function widgetKind(name, s) {
    if (Array.isArray(s.enum) && s.enum.length) return "select";
    if ("const" in s) return "select";
    if (s.type === "boolean") return "checkbox";
    if (s.type === "integer" || s.type === "number") return "number";
    if (s.type === "string") {
      if (s.format === "binary" || s.format === "base64" || s.contentEncoding === "base64") {
        return "file";
      }
      const long = (s.maxLength && s.maxLength > 200)
        || (!s.maxLength && !s.pattern && !s.format && LONG_TEXT.test(name))
        || s.widget === "textarea" || s["x-widget"] === "textarea";
      return long ? "textarea" : "text";
    }
    if (s.type === "array") return "list";
    return "json";
  }

  function scalarItem(items, root) {
    if (!items) return null;
    const { schema } = resolveSchema(items, root);
    const kind = widgetKind("", schema);
    return ["text", "number", "select", "textarea"].includes(kind) ? schema : null;
  }

  function boundsHint(s) {
    const parts = [];
    const min = s.minimum ?? s.exclusiveMinimum;
    const max = s.maximum ?? s.exclusiveMaximum;
    if (s.type === "integer" || s.type === "number") {
      const exclusive = s.minimum === undefined && s.exclusiveMinimum !== undefined
        || s.maximum === undefined && s.exclusiveMaximum !== undefined;
      const low = s.minimum !== undefined ? `at least ${formatNumber(min)}` : `more than ${formatNumber(min)}`;
      const high = s.maximum !== undefined ? `at most ${formatNumber(max)}` : `less than ${formatNumber(max)}`;
      if (min !== undefined && max !== undefined) {
        parts.push(exclusive ? `${low}, ${high}` : `${formatNumber(min)} – ${formatNumber(max)}`);
      } else if (min !== undefined) parts.push(low);
      else if (max !== undefined) parts.push(high);
    }
    if (s.type === "string") {
      if (s.minLength && s.maxLength) parts.push(`${s.minLength}–${s.maxLength} characters`);
      else if (s.maxLength) parts.push(`up to ${s.maxLength.toLocaleString()} characters`);
      else if (s.minLength > 1) parts.push(`at least ${s.minLength} characters`);
      if (s.pattern) parts.push(`pattern ${s.pattern}`);
    }
    if (s.type === "array") {
      if (s.minItems) parts.push(`at least ${s.minItems} items`);
      if (s.maxItems) parts.push(`at most ${s.maxItems} items`);
    }
    return parts.join(" · ");
  }

  function humanize(name) {
    const text = name.replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  class ClientError extends Error {}

  /** One input of a form: wraps a widget with its label, hint and error message. */
  class Field {
    constructor(name, rawSchema, required, root) {
      const { schema, nullable } = resolveSchema(rawSchema, root);
      this.name = name;
      this.schema = schema;
      this.nullable = nullable;
      this.required = required;
      this.root = root;
      this.kind = widgetKind(name, schema);
      this.id = uid(`f-${name}`);
      this.errorEl = h("p", { class: "field-error", id: `${this.id}-error`, hidden: true });
      const hintText = [schema.description, boundsHint(schema)].filter(Boolean).join(" · ");
      this.hintEl = hintText ? h("p", { class: "hint", id: `${this.id}-hint` }, hintText) : null;
      const label = schema.title && schema.title.toLowerCase() !== name.replace(/_/g, " ")
        ? schema.title : humanize(name);
      this.labelText = label;
      this.el = h("div", { class: `field field-${this.kind}`, dataset: { field: name } });
      this.build(label);
      this.reset();
    }

    /** Back to the schema's default (or empty). */
    reset() {
      switch (this.kind) {
        case "checkbox": this.input.checked = false; break;
        case "select": this.input.selectedIndex = 0; break;
        case "file":
          this.fileValue = undefined;
          this.input.value = "";
          this.showFile(null);
          break;
        case "list": clear(this.rows); break;
        default: this.input.value = "";
      }
      this.setError("");
      if (this.schema.default !== undefined) this.set(this.schema.default);
    }

    describedBy() {
      return [this.hintEl && this.hintEl.id, this.errorEl.id].filter(Boolean).join(" ");
    }

    build(label) {
      const s = this.schema;
      const req = this.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null;
      const labelEl = h("label", { for: this.id }, label, req);
      const common = { id: this.id, name: this.name, "aria-describedby": this.describedBy(),
        "aria-required": this.required ? "true" : null };
      switch (this.kind) {
        case "checkbox": {
          this.input = h("input", { ...common, type: "checkbox" });
          this.el.append(h("div", { class: "check" }, this.input, labelEl));
          break;
        }
        case "select": {
          const values = Array.isArray(s.enum) ? s.enum : [s.const];
          this.values = values;
          this.input = h("select", common);
          if (!this.required || this.nullable) {
            this.input.append(h("option", { value: "" }, s.default === undefined || s.default === null ? "— none —" : "— default —"));
          }
          values.forEach((v, i) => this.input.append(h("option", { value: String(i) }, String(v))));
          this.el.append(labelEl, this.input);
          break;
        }
        case "number": {
          const integer = s.type === "integer";
          const min = s.minimum ?? (s.exclusiveMinimum !== undefined
            ? s.exclusiveMinimum + (integer ? 1 : 0) : undefined);
          const max = s.maximum ?? (s.exclusiveMaximum !== undefined
            ? s.exclusiveMaximum - (integer ? 1 : 0) : undefined);
          this.input = h("input", { ...common, type: "number", inputmode: integer ? "numeric" : "decimal",
            step: integer ? (s.multipleOf || 1) : (s.multipleOf || "any"), min, max });
          const row = h("div", { class: "number-row" });
          if (min !== undefined && max !== undefined && (!integer || max - min <= 100000)) {
            const step = integer ? (s.multipleOf || Math.max(1, Math.round((max - min) / 1000)))
              : (s.multipleOf || (max - min) / 100);
            this.range = h("input", { type: "range", min, max, step, tabindex: "-1",
              "aria-hidden": "true", class: "range" });
            this.range.addEventListener("input", () => {
              this.input.value = this.range.value;
              this.input.dispatchEvent(new Event("input", { bubbles: true }));
            });
            this.input.addEventListener("input", () => {
              if (this.input.value !== "") this.range.value = this.input.value;
            });
            row.append(this.range);
          }
          row.append(this.input);
          this.el.append(labelEl, row);
          break;
        }
        case "textarea": {
          this.input = h("textarea", { ...common, rows: s.maxLength && s.maxLength < 600 ? 3 : 4,
            maxlength: s.maxLength, spellcheck: "true" });
          this.el.append(labelEl, this.input);
          break;
        }
        case "text": {
          this.input = h("input", { ...common, type: s.format === "password" ? "password"
            : s.format === "uri" ? "url" : s.format === "email" ? "email" : "text",
          maxlength: s.maxLength, autocomplete: "off" });
          this.el.append(labelEl, this.input);
          break;
        }
        case "file": {
          this.fileValue = undefined;
          this.input = h("input", { ...common, type: "file",
            accept: /image|photo|picture|img/i.test(`${this.name} ${s.description || ""} ${s.contentMediaType || ""}`)
              ? "image/*" : null });
          this.preview = h("div", { class: "file-preview", hidden: true });
          this.clearButton = h("button", { type: "button", class: "btn btn-ghost btn-small", hidden: true,
            onclick: () => { this.fileValue = undefined; this.input.value = ""; this.showFile(null); } },
          "Remove file");
          this.input.addEventListener("change", () => this.readFile());
          this.el.append(labelEl, this.input, h("div", { class: "file-row" }, this.preview, this.clearButton));
          break;
        }
        case "list": {
          this.itemSchema = scalarItem(s.items, this.root);
          if (this.itemSchema) {
            this.rows = h("ol", { class: "list-rows", "aria-label": `${label} items` });
            const add = h("button", { type: "button", class: "btn btn-ghost btn-small",
              "aria-label": `Add an item to ${label}`,
              onclick: () => { const row = this.addRow(""); row.focus(); } }, "+ Add item");
            this.input = add;
            this.el.append(h("span", { class: "label", id: this.id }, label, req), this.rows, add);
            add.id = `${this.id}-add`;
            add.setAttribute("aria-describedby", this.describedBy());
            break;
          }
          this.kind = "json";
        }
        // falls through: a list of objects or tuples is edited as JSON
        case "json":
        default: {
          this.kind = "json";
          this.input = h("textarea", { ...common, rows: 3, class: "mono", spellcheck: "false",
            placeholder: s.type === "array" ? "[ … ] JSON" : "JSON" });
          this.el.append(labelEl, this.input);
        }
      }
      if (this.hintEl) this.el.append(this.hintEl);
      this.el.append(this.errorEl);
    }

    addRow(value) {
      const itemKind = widgetKind("", this.itemSchema);
      let input;
      const rowLabel = `${this.labelText} item`;
      if (itemKind === "select") {
        input = h("select", { "aria-label": rowLabel },
          this.itemSchema.enum.map((v, i) => h("option", { value: String(i) }, String(v))));
        const index = this.itemSchema.enum.indexOf(value);
        if (index >= 0) input.value = String(index);
      } else if (itemKind === "number") {
        input = h("input", { type: "number", step: this.itemSchema.type === "integer" ? 1 : "any",
          "aria-label": rowLabel, min: this.itemSchema.minimum, max: this.itemSchema.maximum });
        input.value = value === "" || value === null || value === undefined ? "" : String(value);
      } else {
        input = h("input", { type: "text", "aria-label": rowLabel, maxlength: this.itemSchema.maxLength });
        input.value = value === null || value === undefined ? "" : String(value);
      }
      const li = h("li", { class: "list-row" }, input, h("button", {
        type: "button", class: "btn btn-ghost btn-icon", "aria-label": `Remove ${rowLabel}`,
        onclick: () => { li.remove(); },
      }, "×"));
      this.rows.append(li);
      return input;
    }

    readFile() {
      const file = this.input.files && this.input.files[0];
      if (!file) { this.fileValue = undefined; this.showFile(null); return; }
      const reader = new FileReader();
      reader.onload = () => { this.fileValue = String(reader.result); this.showFile(this.fileValue, file.name, file.size); };
      reader.onerror = () => this.setError(`could not read ${file.name}`);
      reader.readAsDataURL(file);
    }

    showFile(dataUrl, name, size) {
      clear(this.preview);
      this.preview.hidden = !dataUrl;
      this.clearButton.hidden = !dataUrl;
      if (!dataUrl) return;
      if (/^data:image\//.test(dataUrl)) {
        this.preview.append(h("img", { src: dataUrl, alt: `preview of ${name || "the uploaded image"}` }));
      }
      this.preview.append(h("span", { class: "muted" },
        name ? `${name} (${formatBytes(size)})` : "file from the job's input"));
    }

    set(value) {
      if (value === undefined) return;
      switch (this.kind) {
        case "checkbox": this.input.checked = Boolean(value); break;
        case "select": {
          const index = this.values.findIndex((v) => v === value);
          this.input.value = index >= 0 ? String(index) : "";
          break;
        }
        case "number":
          this.input.value = value === null ? "" : String(value);
          if (this.range && value !== null) this.range.value = String(value);
          break;
        case "file":
          if (typeof value === "string" && value) {
            this.fileValue = this.schema.format === "base64" && !value.startsWith("data:")
              ? `data:application/octet-stream;base64,${value}` : value;
            this.showFile(this.fileValue);
          }
          break;
        case "list":
          clear(this.rows);
          (Array.isArray(value) ? value : []).forEach((v) => this.addRow(v));
          break;
        case "json":
          this.input.value = value === null || (Array.isArray(value) && !value.length)
            ? "" : JSON.stringify(value, null, 2);
          break;
        default:
          this.input.value = value === null ? "" : String(value);
      }
    }

    /** The value to send, or undefined to leave it out (the function's default). */
    get() {
      switch (this.kind) {
        case "checkbox": return this.input.checked;
        case "select": return this.input.value === "" ? undefined : this.values[Number(this.input.value)];
        case "number": {
          if (this.input.validity && this.input.validity.badInput) throw new ClientError("enter a number");
          if (this.input.value === "") return undefined;
          return Number(this.input.value);
        }
        case "file": {
          if (!this.fileValue) return undefined;
          // format "base64" (pydantic Base64Bytes) decodes plain base64; "binary" gets the data URL
          return this.schema.format === "base64" ? this.fileValue.split(",", 2)[1] : this.fileValue;
        }
        case "list": {
          const items = [];
          for (const input of this.rows.querySelectorAll("input, select")) {
            if (input.tagName === "SELECT") items.push(this.itemSchema.enum[Number(input.value)]);
            else if (input.type === "number") {
              if (input.value !== "") items.push(Number(input.value));
            } else if (input.value !== "") items.push(input.value);
          }
          return items.length || this.required ? items : undefined;
        }
        case "json": {
          const text = this.input.value.trim();
          if (!text) return undefined;
          try { return JSON.parse(text); } catch (error) { throw new ClientError(`not valid JSON: ${error.message}`); }
        }
        default:
          return this.input.value === "" ? undefined : this.input.value;
      }
    }

    setError(message) {
      this.errorEl.textContent = message;
      this.errorEl.hidden = !message;
      this.el.classList.toggle("invalid", Boolean(message));
      const target = this.kind === "list" ? this.rows : this.input;
      if (message) target.setAttribute("aria-invalid", "true");
      else target.removeAttribute("aria-invalid");
    }

    focus() {
      const target = this.kind === "list" ? (this.rows.querySelector("input, select") || this.input) : this.input;
      target.focus();
    }
  }

  /** The form of a function: its fields, validation messages and the submit button. */
  class FunctionForm {
    constructor(fn, { onSubmitted, chat }) {
      this.fn = fn;
      this.chat = chat;
      this.onSubmitted = onSubmitted;
      const schema = fn.input_schema || {};
      const required = new Set(schema.required || []);
      this.fields = [];
      this.history = [];
      this.alert = h("div", { class: "alert alert-error", role: "alert", hidden: true });
      this.submitButton = h("button", { type: "submit", class: "btn btn-primary" }, chat ? "Send" : "Run");
      this.el = h("form", { class: "fn-form", novalidate: true, "aria-label": `${fn.name} input` });
      const body = h("div", { class: "fields" });
      for (const [name, prop] of Object.entries(schema.properties || {})) {
        if (chat && name === "history") continue;
        const field = new Field(name, prop, required.has(name), schema);
        this.fields.push(field);
        body.append(field.el);
      }
      if (!this.fields.length) body.append(h("p", { class: "muted" }, "This function takes no input."));
      const actions = h("div", { class: "form-actions" }, this.submitButton);
      if (notifier.supported) actions.prepend(this.notifyToggle());
      if (chat) {
        // While a reply streams, Send waits and Stop ends the reply (kept in the history).
        this.stopButton = h("button", { type: "button", class: "btn btn-danger", hidden: true,
          onclick: async () => {
            const view = this.streaming;
            if (!view) return;
            this.stopButton.disabled = true;
            await view.cancel();
            if (this.streaming === view && !view.cancelling) this.stopButton.disabled = false;
          } }, "Stop");
        actions.append(this.stopButton);
        this.historyNote = h("span", { class: "muted history-note" });
        actions.prepend(h("button", { type: "button", class: "btn btn-ghost",
          onclick: () => { this.setHistory([]); this.onNewConversation && this.onNewConversation(); } },
        "New conversation"), this.historyNote);
      } else {
        actions.prepend(h("button", { type: "button", class: "btn btn-ghost",
          onclick: () => this.reset() }, "Reset"));
      }
      this.el.append(this.alert, body, actions);
      this.el.addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
      this.el.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.tagName === "TEXTAREA") {
          event.preventDefault();
          this.submit();
        }
      });
      this.setHistory([]);
    }

    reset() {
      this.clearErrors();
      this.fields.forEach((f) => f.reset());
    }

    notifyToggle() {
      const id = uid("notify");
      const box = h("input", { type: "checkbox", id, class: "notify-toggle" });
      box.checked = notifier.on;
      const note = h("span", { class: "muted small notify-note", role: "status" });
      box.addEventListener("change", async () => {
        note.textContent = "";
        const on = await notifier.set(box.checked);
        if (box.checked && !on) {
          box.checked = false;
          note.textContent = "notifications are blocked for this site by the browser";
        }
      });
      return h("span", { class: "check notify" }, box,
        h("label", { for: id, title: "A desktop notification when a job you start here ends while this tab is hidden" }, "Notify me"), note);
    }

    /** A chat reply is streaming (`view`) or not (null): Send waits, Stop shows. */
    setStreaming(view) {
      this.streaming = view;
      if (!this.stopButton) return;
      this.stopButton.hidden = !view;
      this.stopButton.disabled = false;
      this.submitButton.disabled = Boolean(view) || this.busy;
      this.submitButton.title = view ? "Wait for the reply, or stop it" : "";
    }

    setHistory(history) {
      this.history = Array.isArray(history) ? history : [];
      if (this.historyNote) {
        const turns = this.history.length;
        this.historyNote.textContent = turns ? `${turns} earlier turn${turns === 1 ? "" : "s"}` : "";
      }
    }

    fill(input) {
      for (const field of this.fields) {
        if (input && field.name in input) field.set(input[field.name]);
      }
    }

    clearErrors() {
      this.alert.hidden = true;
      clear(this.alert);
      this.fields.forEach((f) => f.setError(""));
    }

    showAlert(message, details) {
      clear(this.alert);
      this.alert.append(h("strong", null, "Could not submit: "), message);
      if (details && details.length) {
        this.alert.append(h("ul", null, details.map((d) => h("li", null, d))));
      }
      this.alert.hidden = false;
    }

    collect() {
      const input = {};
      let firstBad = null;
      for (const field of this.fields) {
        try {
          const value = field.get();
          if (value !== undefined) input[field.name] = value;
        } catch (error) {
          if (!(error instanceof ClientError)) throw error;
          field.setError(error.message);
          firstBad = firstBad || field;
        }
      }
      if (this.chat) input.history = this.history;
      if (firstBad) { firstBad.focus(); return null; }
      return input;
    }

    async submit() {
      if (this.busy || (this.chat && this.streaming)) return;
      this.clearErrors();
      const input = this.collect();
      if (!input) return;
      this.busy = true;
      this.submitButton.disabled = true;
      this.submitButton.setAttribute("aria-busy", "true");
      // Resending the same input after a network failure reuses its idempotency key, so
      // a submission whose answer was lost never becomes a second job.
      const body = { function: this.fn.name, input };
      const signature = JSON.stringify(body);
      if (!this.pendingSubmit || this.pendingSubmit.signature !== signature) {
        this.pendingSubmit = { signature, key: randomKey() };
      }
      try {
        const job = await api("/api/jobs", {
          method: "POST", body, headers: { "Idempotency-Key": this.pendingSubmit.key },
        });
        this.pendingSubmit = null;
        notifier.remember(job.id);
        if (job.ticket && !TERMINAL.has(job.status)) tickets.remember(job.id, job.ticket);
        if (this.chat) {
          const message = this.fields.find((f) => f.name === "message");
          if (message) message.input.value = "";
        }
        this.onSubmitted(job);
      } catch (error) {
        if (!(error instanceof NetworkError)) this.pendingSubmit = null;
        this.showSubmitError(error);
      } finally {
        this.busy = false;
        this.submitButton.disabled = Boolean(this.chat && this.streaming);
        this.submitButton.removeAttribute("aria-busy");
      }
    }

    showSubmitError(error) {
      if (error instanceof ApiError && error.code === "invalid_input" && Array.isArray(error.error.errors)) {
        const unplaced = [];
        let first = null;
        for (const item of error.error.errors) {
          const name = String(item.field || "").split(".")[0];
          const field = this.fields.find((f) => f.name === name);
          const text = item.field && item.field.includes(".")
            ? `${item.field.slice(name.length + 1)}: ${item.message}` : item.message;
          if (field) {
            field.setError(field.errorEl.hidden ? text : `${field.errorEl.textContent}; ${text}`);
            first = first || field;
          } else unplaced.push(`${item.field}: ${item.message}`);
        }
        this.showAlert("the input is not valid. Check the highlighted fields.", unplaced);
        if (first) first.focus();
        return;
      }
      if (error instanceof ApiError && error.code === "queue_full") {
        this.showAlert(`${error.message} Try again in ${error.error.retry_after || 1} s.`);
        return;
      }
      if (error instanceof ApiError && error.code === "payload_too_large") {
        this.showAlert(`${error.message}. Files are sent inside the input: use a smaller file.`);
        return;
      }
      if (error instanceof KeyDeclined) { this.showAlert("an API key is required."); return; }
      this.showAlert(error.message || String(error));
    }
  }

  // ---------------------------------------------------------------------------------
  // The job view: one job followed live over its event log
  // ---------------------------------------------------------------------------------
  class JobView {
    constructor(job, fn, { chat, submittedReason, onFinished, onChange }) {
      this.job = job;
      this.fn = fn;
      this.chat = chat;
      // this page's own submission (its answer's ticket), else one this browser stored
      this.ticket = job.ticket || tickets.of(job.id);
      this.onFinished = onFinished;
      this.onChange = onChange || (() => {}); // the status or the progress moved
      this.runOutputs = 0; // output chunks of the current run (a retry may discard them)
      this.starts = 0;
      this.runAttempt = null; // the attempt number of the run the events are showing
      this.retryAt = null; // when a retried job's next attempt may start (ms)
      this.fraction = null;
      this.progressText = "";
      this.lastId = 0;
      this.status = job.status;
      this.terminal = false;
      this.text = "";
      this.shownArtifacts = new Set();
      this.attemptStart = null;
      this.firstProgress = null;
      this.build(submittedReason);
      this.applyJob(job);
    }

    build(submittedReason) {
      const job = this.job;
      this.statusEl = statusBadge(job.status);
      this.conn = connectionIndicator("Connection to the job's event stream");
      this.cancelButton = h("button", { type: "button", class: "btn btn-danger",
        onclick: () => this.cancel() }, "Cancel");
      const link = h("a", { href: `/jobs/${job.id}`, class: "job-link" }, h("code", null, shortId(job.id)));
      link.title = job.id;
      this.metaEl = h("p", { class: "job-meta" });
      this.queueEl = h("div", { class: "notice notice-queue", hidden: true });
      this.progressDesc = h("span", { class: "progress-desc" }, "Working…");
      this.progressPct = h("span", { class: "progress-pct" });
      this.progressFill = h("div", { class: "bar-fill" });
      this.progressBar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0",
        "aria-valuemax": "100", "aria-label": "Job progress" }, this.progressFill);
      this.progressCounts = h("span", { class: "progress-counts" });
      this.progressEta = h("span", { class: "progress-eta" });
      this.progressEl = h("div", { class: "progress", hidden: true },
        h("div", { class: "progress-head" }, this.progressDesc, this.progressPct),
        this.progressBar,
        h("div", { class: "progress-foot" }, this.progressCounts, this.progressEta));
      this.noticesEl = h("div", { class: "notices" });
      this.errorEl = h("div", { class: "alert alert-error job-error", role: "alert", hidden: true });
      this.textNode = document.createTextNode("");
      this.caret = h("span", { class: "caret", "aria-hidden": "true" });
      this.streamEl = h("div", { class: "stream-text", "aria-label": "Streamed output", role: "log",
        "aria-live": "off" }, this.textNode, this.caret);
      this.streamCopy = copyButton(() => this.text, "Copy the streamed text");
      this.galleryEl = h("div", { class: "gallery", hidden: true });
      this.artifactsEl = h("ul", { class: "artifacts", hidden: true, "aria-label": "Files" });
      this.chunksEl = h("ol", { class: "chunks", hidden: true, "aria-label": "Output" });
      this.resultEl = h("div", { class: "result", hidden: true });
      this.logList = h("ol", { class: "log-list" });
      this.logCount = h("span", null, "Log");
      this.logEl = h("details", { class: "log", hidden: true }, h("summary", null, this.logCount), this.logList);
      const outputs = [];
      if (this.chat) {
        this.chatEl = h("div", { class: "chat", "aria-label": "Conversation" });
        for (const [user, assistant] of Array.isArray(job.input.history) ? job.input.history : []) {
          this.chatEl.append(this.bubble("user", user), this.bubble("assistant", assistant));
        }
        this.chatEl.append(this.bubble("user", job.input.message));
        const reply = this.bubble("assistant", "", () => this.text);
        this.replyEl = reply;
        // before the first token the reply says what the job is doing (queued at position
        // N, waiting for a loading model, the function's own progress) rather than nothing
        this.bubbleWaitEl = h("span", { class: "bubble-wait muted", role: "status" }, "Sending…");
        clear(reply.querySelector(".bubble-text")).append(this.bubbleWaitEl, this.streamEl);
        this.chatEl.append(reply);
        this.streamEl.classList.add("in-chat");
        outputs.push(this.chatEl);
      } else {
        this.streamEl.hidden = true;
        this.streamTools = h("div", { class: "output-tools", hidden: true }, this.streamCopy);
        outputs.push(this.streamTools, this.streamEl);
      }
      outputs.push(this.galleryEl, this.chunksEl, this.artifactsEl, this.resultEl);
      this.el = h("section", { class: "job", "aria-labelledby": `job-title-${job.id}`,
        dataset: { jobId: job.id, status: job.status } },
      h("header", { class: "job-head" },
        h("div", { class: "job-title-row" },
          h("h2", { id: `job-title-${job.id}`, class: "job-title" }, "Job ", link),
          this.statusEl, this.conn),
        h("div", { class: "job-actions" }, this.cancelButton)),
      this.metaEl,
      submittedReason && submittedReason !== "new"
        ? h("p", { class: "notice notice-info" }, submittedReason === "cached"
          ? "Answered from the cache: an identical job already ran."
          : submittedReason === "deduplicated"
            ? "Joined an identical job that was already queued or running."
            : "This request was already submitted (same idempotency key).")
        : null,
      this.queueEl, this.progressEl, this.noticesEl, this.errorEl,
      h("div", { class: "outputs" }, outputs),
      this.logEl,
      h("details", { class: "input-details" }, h("summary", null, "Input"),
        h("pre", { class: "mono" }, JSON.stringify(this.shownInput(job.input), null, 2))));
    }

    shownInput(input) {
      // data URLs of uploads are long: show their size instead
      const out = {};
      for (const [k, v] of Object.entries(input || {})) {
        out[k] = typeof v === "string" && v.length > 200 ? `${v.slice(0, 60)}… (${v.length.toLocaleString()} characters)` : v;
      }
      return out;
    }

    bubble(role, text, getText) {
      const copy = role === "assistant" ? copyButton(getText || (() => text), "Copy this reply") : null;
      if (copy && !text && getText) copy.hidden = true; // shown once the reply has text
      return h("div", { class: `bubble bubble-${role}` },
        h("div", { class: "bubble-head" },
          h("span", { class: "bubble-role" }, role === "user" ? "You" : "Assistant"), copy),
        h("div", { class: "bubble-text" }, text));
    }

    start() {
      this.stream = new LiveStream({
        url: () => `/api/jobs/${encodeURIComponent(this.job.id)}/events?last_event_id=${this.lastId}`,
        types: EVENT_TYPES,
        onEvent: (type, event) => this.onEvent(type, event),
        onState: (state) => this.conn.set(state, state === "closed" ? this.closedLabel() : null),
        beforeReconnect: () => this.refresh(),
      });
      this.stream.start();
      this.ticker = setInterval(() => this.tick(), 1000);
      this.tick();
    }

    closedLabel() {
      return this.terminal ? "complete" : "stopped";
    }

    destroy() {
      this.destroyed = true;
      if (this.stream) this.stream.stop();
      clearInterval(this.ticker);
    }

    /** Re-read the job (before reconnecting): false stops following (it is gone). */
    async refresh() {
      try {
        const job = await api(`/api/jobs/${encodeURIComponent(this.job.id)}`);
        if (this.destroyed) return false;
        this.applyJob(job);
        return true;
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          this.showError({ type: "Not found", message: error.message });
          return false;
        }
        throw error;
      }
    }

    applyJob(job) {
      this.job = { ...this.job, ...job };
      if (!this.terminal || TERMINAL.has(job.status)) this.setStatus(job.status);
      if (job.status === "queued") this.showQueue(job.queue_position);
      else this.job.waiting = null;
      this.renderMeta();
      this.showBubbleStatus();
    }

    tick() {
      if (this.destroyed) return;
      this.renderMeta();
      if (this.status === "queued" && this.retryAt) this.showQueue(this.job.queue_position);
      this.checkStalled();
      // a queued job's position moves as others finish: poll it, events only carry the first
      if (this.status === "queued" && !this.terminal && Date.now() - (this.lastPoll || 0) > 2000) {
        this.lastPoll = Date.now();
        api(`/api/jobs/${encodeURIComponent(this.job.id)}`).then((job) => {
          if (!this.destroyed && this.status === "queued") this.applyJob(job);
        }).catch(() => {});
      }
    }

    /**
     * A stream can die without an error (a sleeping laptop, a proxy that drops idle
     * sockets silently). Every 15 s, compare the job's last event id with the last one
     * shown; if the page is still behind at the next check, reconnect.
     */
    checkStalled() {
      if (this.terminal || !this.stream || this.conn.dataset.state !== "live") return;
      if (Date.now() - (this.lastCheck || 0) < 15000) return;
      this.lastCheck = Date.now();
      if (this.behind && this.lastId < this.behind) {
        this.behind = null;
        this.stream.restart();
        return;
      }
      api(`/api/jobs/${encodeURIComponent(this.job.id)}`).then((job) => {
        this.behind = job.last_event_id > this.lastId ? job.last_event_id : null;
      }).catch(() => {});
    }

    renderMeta() {
      const job = this.job;
      const parts = [h("span", null, h("a", { href: `/functions/${encodeURIComponent(job.function)}` }, job.function))];
      parts.push(h("span", { title: formatTime(job.created_at) }, `submitted ${formatAgo(job.created_at)}`));
      if (job.max_attempts > 1 || job.attempts > 1) parts.push(h("span", null, `attempt ${Math.max(1, job.attempts)} of ${job.max_attempts}`));
      // "running for" only while it runs: a job back in the queue (a retry, a requeue)
      // is waiting, and says so in its queue notice
      if (job.started_at && job.finished_at && TERMINAL.has(this.status)) {
        parts.push(h("span", { class: "elapsed" }, `ran ${formatDuration(Math.max(0, job.finished_at - job.started_at))}`));
      } else if (job.started_at && this.status === "running") {
        parts.push(h("span", { class: "elapsed" }, `running for ${formatDuration(Math.max(0, Date.now() / 1000 - job.started_at))}`));
      }
      clear(this.metaEl);
      parts.forEach((p, i) => { if (i) this.metaEl.append(h("span", { class: "sep", "aria-hidden": "true" }, "·")); this.metaEl.append(p); });
    }

    setStatus(status) {
      this.status = status;
      this.el.dataset.status = status;
      this.statusEl.className = `status status-${status}`;
      this.statusEl.dataset.status = status;
      this.statusEl.textContent = status === "running" && this.cancelling ? "cancelling" : status;
      const done = TERMINAL.has(status);
      this.cancelButton.hidden = done;
      this.caret.hidden = done;
      if (status !== "queued") {
        this.queueEl.hidden = true;
        this.retryAt = null;
      }
      this.renderMeta();
      this.showBubbleStatus();
      this.onChange(this);
    }

    /** Why it waits though it may be next (job.waiting: a model loading, a failed
     * setup, no worker), polled with the position while queued. */
    waitingWhy() {
      const waiting = this.job.waiting;
      return waiting && waiting.message ? waiting.message.replace(/^waiting for a worker: /, "") : null;
    }

    showQueue(position) {
      this.queueEl.hidden = false;
      this.job.queue_position = position;
      const waiting = this.job.waiting;
      const why = this.waitingWhy();
      const retryIn = this.retryAt ? (this.retryAt - Date.now()) / 1000 : 0;
      const where = retryIn > 0.5
        ? ` — attempt ${this.nextAttempt} starts in ${formatDuration(retryIn)}`
        : position ? ` — position ${position} in the queue`
          : this.nextAttempt ? ` — attempt ${this.nextAttempt} waits for a worker` : " — waiting for a worker";
      append(clear(this.queueEl), h("strong", null, "Queued"), where,
        why ? h("span", { class: "queue-why", dataset: { reason: waiting.reason } }, ` — ${why}`) : null);
      this.queueEl.dataset.position = position || "";
      this.showBubbleStatus();
    }

    /** The chat reply before its first token: what the job is doing instead of nothing. */
    showBubbleStatus() {
      if (!this.bubbleWaitEl) return;
      let text = "";
      if (!this.text && !TERMINAL.has(this.status)) {
        if (this.status === "queued") {
          const why = this.waitingWhy();
          const position = this.job.queue_position;
          text = [why ? `Waiting: ${why}` : "Queued",
            position ? `position ${position} in the queue` : null].filter(Boolean).join(" · ");
        } else if (this.status === "running") {
          text = this.progressText || "Thinking…";
          if (this.fraction !== null && this.fraction !== undefined) text += ` (${Math.round(this.fraction * 100)} %)`;
        }
      }
      this.bubbleWaitEl.hidden = !text;
      this.bubbleWaitEl.textContent = text;
    }

    onEvent(type, event) {
      const id = Number(event.lastEventId);
      if (id && id <= this.lastId) return; // already applied (never show an event twice)
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (id) this.lastId = id;
      this.apply(type, message.data || {}, message.ts);
      if (TERMINAL.has(type)) {
        this.terminal = true;
        this.stream.stop();
        // the final view: its attempt count is the one the result reports
        this.refresh().catch(() => {});
        if (this.onFinished) this.onFinished(this);
      }
    }

    apply(type, data, ts) {
      switch (type) {
        case "queued":
          this.setStatus("queued");
          this.showQueue(data.position);
          break;
        case "started": {
          // Any start after the first is a new run (a retry, or a job requeued by a lost
          // worker or a shutdown, which may keep its attempt number).
          const attempt = data.attempt || Math.max(1, this.job.attempts || 0);
          if (this.starts) this.newRun(attempt, data.max_attempts || this.job.max_attempts);
          this.starts += 1;
          this.runOutputs = 0;
          this.nextAttempt = null;
          this.runAttempt = attempt; // the job view (polled) may be ahead of the events
          this.job.attempts = attempt;
          if (data.max_attempts) this.job.max_attempts = data.max_attempts;
          this.job.started_at = ts;
          this.attemptStart = ts;
          this.firstProgress = null;
          this.setStatus("running");
          this.renderMeta();
          break;
        }
        case "progress": this.showProgress(data, ts); break;
        case "output": this.runOutputs += 1; this.showChunk(data.chunk); break;
        case "log": this.addLog(data.level || "info", data.message, ts); break;
        case "retrying": {
          // The run that ended is the one the last `started` event named; the event's
          // own count may differ (a shutdown gives its attempt back) or be missing.
          const reason = data.reason || (data.error && `${data.error.type}: ${data.error.message}`) || "no reason given";
          const ran = this.runAttempt || data.attempt || this.job.attempts || 1;
          const next = data.next_attempt || ran + 1;
          const when = data.delay ? `in ${formatDuration(data.delay)}` : "now";
          this.notice("warn", next === ran
            ? `Attempt ${ran} did not finish (${reason}); it runs again ${when} as attempt ${ran} (this stop is not counted as an attempt).`
            : `Attempt ${ran} did not finish (${reason}); attempt ${next} starts ${when}.`);
          this.nextAttempt = next;
          this.retryAt = data.delay ? (ts ? ts * 1000 : Date.now()) + data.delay * 1000 : null;
          this.setStatus("queued");
          this.showQueue(null);
          break;
        }
        case "succeeded":
          this.finish("succeeded", ts);
          this.showResult(data.result);
          break;
        case "failed":
          this.job.error = data.error || null;
          this.finish("failed", ts);
          this.showError(data.error || { type: "Error", message: "the job failed" });
          break;
        case "cancelled":
          this.finish("cancelled", ts);
          this.notice("info", `Cancelled${data.reason && data.reason !== "cancelled" ? `: ${data.reason}` : "."}`);
          break;
        case "expired":
          this.finish("expired", ts);
          this.notice("warn", data.reason ? `Expired: ${data.reason}` : "Expired in the queue.");
          break;
        default: break;
      }
    }

    finish(status, ts) {
      this.job.finished_at = ts;
      this.job.status = status;
      this.terminal = true;
      if (status === "succeeded" && !this.progressEl.hidden) this.setProgressFraction(1);
      this.progressEta.textContent = "";
      this.progressEl.classList.add("done");
      // the bar's colour says how it ended: green done, red failed, grey stopped
      this.progressEl.dataset.outcome = status;
      this.setStatus(status);
      this.renderMeta();
    }

    newRun(attempt, max) {
      // Output starts over only when the previous run had output (the rule of
      // client/attempts.py): then the new run's output is shown alone. A run without
      // output (a download resuming its part file, a failed setup) just goes on.
      const of = `attempt ${attempt}${max ? ` of ${max}` : ""}`;
      this.el.dataset.attempt = String(attempt);
      this.progressEl.hidden = true;
      this.progressEl.classList.remove("done");
      delete this.progressEl.dataset.outcome;
      this.fraction = null;
      this.progressText = "";
      if (!this.runOutputs) {
        this.notice("info", `Running again (${of}).`);
        return;
      }
      this.text = "";
      this.textNode.data = "";
      if (!this.chat) { this.streamEl.hidden = true; this.streamTools.hidden = true; }
      if (this.replyEl) this.replyEl.querySelector(".copy-button").hidden = true;
      clear(this.galleryEl); this.galleryEl.hidden = true;
      clear(this.chunksEl); this.chunksEl.hidden = true;
      clear(this.artifactsEl); this.artifactsEl.hidden = true;
      this.shownArtifacts.clear();
      const chunks = this.runOutputs === 1 ? "1 output chunk" : `${this.runOutputs} output chunks`;
      this.notice("info", `Started over (${of}): the previous run's ${chunks} were discarded.`);
    }

    setProgressFraction(fraction) {
      if (fraction === null || fraction === undefined) {
        this.progressBar.removeAttribute("aria-valuenow");
        this.progressBar.classList.add("indeterminate");
        this.progressPct.textContent = "";
        this.progressFill.style.width = "";
        return;
      }
      const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
      this.progressBar.classList.remove("indeterminate");
      this.progressBar.setAttribute("aria-valuenow", String(pct));
      this.progressBar.setAttribute("aria-valuetext", `${pct} %`);
      this.progressFill.style.width = `${pct}%`;
      this.progressPct.textContent = `${pct} %`;
    }

    showProgress(data, ts) {
      this.progressEl.hidden = false;
      this.setProgressFraction(data.fraction);
      this.fraction = data.fraction;
      if (data.description) {
        this.progressDesc.textContent = data.description;
        this.progressText = data.description;
      }
      const counts = [];
      if (data.current !== undefined && data.current !== null) {
        const unit = data.unit || "";
        if (BYTE_UNITS.has(unit)) {
          counts.push(data.total ? `${formatBytes(data.current)} / ${formatBytes(data.total)}`
            : formatBytes(data.current));
        } else {
          counts.push(data.total ? `${formatNumber(data.current)} / ${formatAmount(data.total, unit)}`
            : formatAmount(data.current, unit));
        }
      }
      if (data.rate) counts.push(formatRate(data.rate, data.unit));
      this.progressCounts.textContent = counts.join(" · ");
      let eta = data.eta;
      if ((eta === undefined || eta === null) && data.fraction > 0 && data.fraction < 1) {
        if (!this.firstProgress) this.firstProgress = { ts: this.attemptStart || ts, fraction: 0 };
        const elapsed = ts - this.firstProgress.ts;
        const done = data.fraction - this.firstProgress.fraction;
        if (elapsed > 0.2 && done > 0) eta = (elapsed / done) * (1 - data.fraction);
      }
      this.progressEta.textContent = eta !== undefined && eta !== null && data.fraction !== 1
        && !this.terminal ? `ETA ${formatClock(eta)}` : "";
      this.showBubbleStatus();
      this.onChange(this);
    }

    appendText(text) {
      const first = !this.text;
      this.text += text;
      this.textNode.appendData(text);
      this.streamEl.hidden = false;
      if (first) {
        if (this.streamTools) this.streamTools.hidden = false;
        if (this.replyEl) this.replyEl.querySelector(".copy-button").hidden = false;
        this.showBubbleStatus();
      }
      const box = this.chat ? this.chatEl : this.streamEl;
      if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
    }

    showChunk(chunk) {
      if (typeof chunk === "string") { this.appendText(chunk); return; }
      if (isArtifact(chunk)) { this.showArtifact(chunk.artifact); return; }
      const artifacts = collectArtifacts(chunk);
      artifacts.forEach((a) => this.showArtifact(a));
      if (onlyArtifacts(chunk)) return;
      this.chunksEl.hidden = false;
      this.chunksEl.append(h("li", null, h("pre", { class: "mono" }, JSON.stringify(chunk, null, 2))));
    }

    showArtifact(artifact) {
      if (this.shownArtifacts.has(artifact.id)) return;
      this.shownArtifacts.add(artifact.id);
      const url = `/api/artifacts/${encodeURIComponent(artifact.id)}`; // the session cookie
      const name = artifact.name || artifact.id;
      const download = h("a", { href: url, download: name, class: "btn btn-ghost btn-small" }, "Download");
      if (String(artifact.content_type || "").startsWith("image/")) {
        this.galleryEl.hidden = false;
        const img = h("img", { src: url, alt: `${name} (image output)`, loading: "lazy",
          dataset: { artifact: artifact.id } });
        this.galleryEl.append(h("figure", { class: "image-card" },
          h("a", { href: url, target: "_blank", rel: "noopener", class: "image-link" }, img),
          h("figcaption", null, h("span", { class: "mono small" }, name),
            h("span", { class: "muted small" }, formatBytes(artifact.size)), download)));
      } else {
        this.artifactsEl.hidden = false;
        this.artifactsEl.append(h("li", { class: "artifact" },
          h("span", { class: "artifact-name" }, name),
          h("span", { class: "muted small" }, `${artifact.content_type} · ${formatBytes(artifact.size)}`),
          download));
      }
    }

    showResult(result) {
      collectArtifacts(result).forEach((a) => this.showArtifact(a));
      if (result === null || result === undefined || onlyArtifacts(result)) return;
      if (typeof result === "string" && result === this.text) return; // it was streamed
      if (Array.isArray(result) && !result.length && (this.text || this.shownArtifacts.size)) return;
      clear(this.resultEl);
      this.resultEl.hidden = false;
      const text = typeof result === "string" ? result : JSON.stringify(result, null, 2);
      this.resultEl.append(h("div", { class: "result-head" }, h("h3", null, "Result"),
        copyButton(() => text, "Copy the result")));
      if (typeof result === "string") this.resultEl.append(h("div", { class: "result-text" }, result));
      else this.resultEl.append(h("pre", { class: "mono result-json" }, text));
    }

    showError(error) {
      clear(this.errorEl);
      this.errorEl.hidden = false;
      this.errorEl.append(h("p", { class: "error-title" },
        h("strong", { class: "error-type" }, error.type || "Error"), ": ",
        h("span", { class: "error-message" }, error.message || "")));
      if (error.traceback) {
        this.errorEl.append(h("details", null, h("summary", null, "Traceback"),
          h("pre", { class: "mono traceback" }, error.traceback)));
      }
    }

    notice(kind, text) {
      this.noticesEl.append(h("p", { class: `notice notice-${kind}` }, text));
    }

    addLog(level, message, ts) {
      this.logEl.hidden = false;
      this.logList.append(h("li", { class: `log-${level}` },
        h("time", { class: "muted" }, new Date(ts * 1000).toLocaleTimeString()), " ",
        h("span", { class: "log-level" }, level), " ", message));
      this.logCount.textContent = `Log (${this.logList.children.length})`;
    }

    /**
     * With this browser's ticket, let go of its submission only: a job that identical
     * submissions share goes on for the others, and the view says so (Cancel then offers
     * to cancel it for everyone). Without one, cancel the job outright.
     */
    async cancel() {
      this.cancelButton.disabled = true;
      this.cancelling = true;
      this.cancelButton.textContent = "Cancelling…";
      const url = `/api/jobs/${encodeURIComponent(this.job.id)}/cancel`;
      const ticket = this.ticket;
      try {
        let job;
        try {
          job = await api(ticket ? `${url}?ticket=${encodeURIComponent(ticket)}` : url, { method: "POST" });
        } catch (error) {
          // a ticket the job never had (a stored one gone stale): cancel as without one
          if (!(ticket && error instanceof ApiError && ["unknown_ticket", "bad_request"].includes(error.code))) throw error;
          job = await api(url, { method: "POST" });
        }
        if (ticket) {
          tickets.forget(ticket);
          this.ticket = null;
        }
        if (ticket && !TERMINAL.has(job.status) && !job.cancel_requested) {
          this.cancelling = false;
          this.cancelButton.disabled = false;
          this.cancelButton.textContent = this.cancelLabel = "Cancel for everyone";
          this.notice("info", "You let go of this job; it goes on for another submission of the same input.");
        }
        if (!this.terminal) this.applyJob(job);
      } catch (error) {
        this.notice("error", `Could not cancel: ${error.message}`);
        this.cancelButton.disabled = false;
        this.cancelling = false;
        this.cancelButton.textContent = this.cancelLabel || "Cancel";
      }
    }
  }

  // ---------------------------------------------------------------------------------
  // Pages
  // ---------------------------------------------------------------------------------
  const main = () => $("#main");
  let current = null; // {kind, cleanup(), ...} of the mounted page
  let routeToken = 0;

  function pageHeader(title, subtitle, ...extra) {
    return h("div", { class: "page-head" },
      h("div", null, h("h1", { tabindex: "-1" }, title), subtitle ? h("p", { class: "lead" }, subtitle) : null),
      extra.length ? h("div", { class: "page-tools" }, extra) : null);
  }

  function errorPage(title, error, retry) {
    const body = h("div", { class: "card empty" }, h("h1", { tabindex: "-1" }, title),
      h("p", { class: "error-message" }, error instanceof KeyDeclined
        ? "This server requires an API key." : (error && error.message) || String(error)));
    const actions = h("div", { class: "form-actions" });
    if (error instanceof KeyDeclined) {
      actions.append(h("button", { type: "button", class: "btn btn-primary",
        onclick: () => auth.ask().then(retry, () => {}) }, "Enter API key"));
    } else if (retry) {
      actions.append(h("button", { type: "button", class: "btn btn-primary", onclick: retry }, "Try again"));
    }
    body.append(actions);
    return body;
  }

  // -- home: the functions ------------------------------------------------------------
  async function pageHome(root) {
    document.title = "Functions · genq";
    const functions = await loadFunctions();
    const grid = h("div", { class: "fn-grid" });
    for (const fn of functions) {
      const description = firstLine(fn.description);
      grid.append(h("a", { class: "card fn-card", href: `/functions/${encodeURIComponent(fn.name)}` },
        h("h2", null, fn.name),
        h("p", { class: "muted" }, description ? richText(description) : "No description."),
        functionBadges(fn)));
    }
    if (!functions.length) grid.append(h("p", { class: "card empty" }, "This app registers no functions."));
    append(clear(root), [pageHeader("Functions", "Pick a function to run it. Every run is a durable job you can follow, share and resume."), grid]);
    return {};
  }

  // -- function page and job page -----------------------------------------------------
  async function pageWorkbench(root, { fnName, jobId, job: knownJob }) {
    let job = knownJob || null;
    if (jobId && !job) {
      try {
        job = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          document.title = "Job not found · genq";
          append(clear(root), errorPage("Job not found", new Error(`There is no job ${jobId} (or it belongs to another API key).`)));
          return {};
        }
        throw error;
      }
    }
    const name = job ? job.function : fnName;
    const functions = await loadFunctions();
    let fn = functions.find((f) => f.name === name);
    activeFunction = name;
    markActiveFunction();
    if (!fn && job) { // the job outlived its function (the app changed): still show it
      fn = { name, description: "This function is no longer registered by the app; its jobs can still be viewed.",
        kind: "function", streams: false, input_schema: { properties: {} }, options: { concurrency: 0 }, missing: true };
    }
    if (!fn) {
      document.title = "Unknown function · genq";
      append(clear(root), errorPage("Unknown function", new Error(`No function named “${name}”. Known: ${functions.map((f) => f.name).join(", ") || "none"}.`)));
      return {};
    }
    // Same function already on screen (a submit, or a link to another of its jobs): keep
    // the form as the user left it and swap only the job panel.
    if (current && current.kind === "workbench" && current.fnName === name && root.contains(current.el)) {
      current.showJob(job);
      return current;
    }
    return buildWorkbench(root, fn, job);
  }

  function buildWorkbench(root, fn, job) {
    const chat = isChat(fn);
    const page = { kind: "workbench", fnName: fn.name, view: null };
    const panel = h("section", { class: "card job-card", "aria-label": "Job" });
    const form = new FunctionForm(fn, {
      chat,
      onSubmitted: (submitted) => {
        const view = { ...submitted };
        history.pushState(null, "", `/jobs/${submitted.id}`);
        page.showJob(view, submitted.submitted);
      },
    });
    page.form = form;
    form.onNewConversation = () => {
      // a reply still streaming belongs to the conversation being left: stop it
      if (page.view && !page.view.terminal) page.view.cancel();
      history.pushState(null, "", `/functions/${encodeURIComponent(fn.name)}`);
      page.showJob(null);
    };
    const description = fn.description ? h("p", { class: "lead fn-description" }, richText(fn.description)) : null;
    page.el = h("div", { class: "workbench-page" },
      h("div", { class: "page-head" },
        h("div", null, h("h1", { tabindex: "-1" }, fn.name), description, functionBadges(fn))),
      h("div", { class: `workbench ${chat ? "workbench-chat" : ""}` },
        fn.missing ? null : h("section", { class: "card form-card", "aria-label": "Input" },
          h("h2", { class: "card-title" }, chat ? "Chat" : "Input"), form.el),
        panel));

    page.showJob = (shown, reason) => {
      if (page.view) page.view.destroy();
      page.view = null;
      clear(panel);
      form.setStreaming(null);
      if (!shown) {
        document.title = `${fn.name} · genq`;
        panel.append(emptyJobPanel(fn));
        return;
      }
      if (chat) form.setHistory(Array.isArray(shown.input.history) ? shown.input.history : []);
      const view = new JobView(shown, fn, {
        chat, submittedReason: reason,
        // the tab title follows the job: "42% render", "done: render"
        onChange: (v) => {
          if (!v.destroyed && (page.view === v || !page.view)) document.title = `${jobTitle(v)} · genq`;
        },
        onFinished: (v) => {
          // a reply the user stopped stays in the conversation, as far as it got
          if (chat && (v.status === "succeeded" || (v.status === "cancelled" && v.text))) {
            form.setHistory([...(v.job.input.history || []), [v.job.input.message, v.text]]);
          }
          if (page.view === v) form.setStreaming(null);
          notifier.ended({ ...v.job, status: v.status });
        },
      });
      page.view = view;
      document.title = `${jobTitle(view)} · genq`;
      if (chat && !TERMINAL.has(view.status)) form.setStreaming(view);
      panel.append(view.el, webhookDeliveries(shown.id));
      view.start();
    };
    page.cleanup = () => { if (page.view) page.view.destroy(); };

    append(clear(root), page.el);
    if (job) {
      form.fill(chat ? { ...job.input, message: "" } : job.input);
      page.showJob(job);
    } else {
      page.showJob(null);
    }
    current = page;
    return page;
  }

  /** The job's "Webhook deliveries" block (GET /api/jobs/{id}/webhooks): where they go,
   * what is pending and every attempt. Empty for a job without a webhook; refreshed every
   * 2 s until the last delivery is done or the block leaves the page. */
  function webhookDeliveries(jobId) {
    const box = h("section", { class: "webhooks", "aria-label": "Webhook deliveries", hidden: true });
    async function refresh() {
      let report;
      try { report = await api(`/api/jobs/${encodeURIComponent(jobId)}/webhooks`); } catch { report = null; }
      if (!box.isConnected && box.dataset.shown) return;
      const hook = report && report.webhook;
      if (!hook) { box.hidden = true; return; }
      const rows = report.attempts.map((a) => h("tr", null,
        h("td", null, new Date(a.at * 1000).toLocaleTimeString()), h("td", null, h("code", null, a.type)),
        h("td", null, a.outcome), h("td", null, a.status === null ? "–" : String(a.status)),
        h("td", { class: "muted" }, a.error || "")));
      const pending = hook.pending
        ? `Pending: ${hook.pending.type}, ${hook.pending.attempts} attempt(s) so far.` : "";
      append(clear(box),
        h("h3", { class: "small-title" }, "Webhook deliveries"),
        h("p", { class: "muted small" }, h("code", null, hook.url), ` · ${hook.events.join(", ")}`,
          hook.done ? " · done" : "", pending ? ` · ${pending}` : ""),
        rows.length ? h("div", { class: "table-wrap" }, h("table", null,
          h("thead", null, h("tr", null, ...["Time", "Type", "Outcome", "Status", "Error"].map((t) => h("th", null, t)))),
          h("tbody", null, ...rows))) : h("p", { class: "muted small" }, "No attempt yet."));
      box.hidden = false;
      box.dataset.shown = "1";
      if (!hook.done) setTimeout(() => { if (box.isConnected) refresh(); }, 2000);
    }
    refresh();
    return box;
  }

  function emptyJobPanel(fn) {
    const list = h("ul", { class: "recent-list" });
    const box = h("div", { class: "empty-job" },
      h("h2", { class: "card-title" }, "No job yet"),
      h("p", { class: "muted" }, isChat(fn) ? "Send a message to start the conversation."
        : "Fill in the input and press Run. The job's progress and output appear here live, and its page can be shared or reloaded."),
      list);
    api(`/api/jobs?function=${encodeURIComponent(fn.name)}&limit=5`).then((data) => {
      const jobs = (data && data.jobs) || [];
      if (!jobs.length) return;
      list.before(h("h3", { class: "small-title" }, "Recent jobs"));
      for (const j of jobs) {
        list.append(h("li", null, h("a", { href: `/jobs/${j.id}` }, h("code", null, shortId(j.id))),
          " ", statusBadge(j.status), h("span", { class: "muted small" }, ` ${formatAgo(j.created_at)}`)));
      }
    }).catch(() => {});
    return box;
  }

  // -- the jobs list -------------------------------------------------------------------
  async function pageJobs(root) {
    document.title = "Jobs · genq";
    activeFunction = null;
    markActiveFunction();
    const params = new URLSearchParams(location.search);
    const functions = await loadFunctions();
    const filters = { function: params.get("function") || "", status: params.get("status") || "" };
    const fnSelect = h("select", { id: "filter-function" },
      h("option", { value: "" }, "All functions"),
      functions.map((f) => h("option", { value: f.name }, f.name)));
    const statusSelect = h("select", { id: "filter-status" },
      h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s)));
    fnSelect.value = filters.function;
    statusSelect.value = filters.status;
    const conn = connectionIndicator("Live updates of your jobs");
    const tbody = h("tbody");
    const empty = h("p", { class: "empty muted", hidden: true }, "No jobs match these filters yet.");
    const more = h("button", { type: "button", class: "btn btn-ghost", hidden: true }, "Load more");
    const count = h("span", { class: "muted small", "aria-live": "polite" });
    const rows = new Map();
    let next = null;
    let loading = null;

    const matches = (job) => (!filters.function || job.function === filters.function)
      && (!filters.status || job.status === filters.status);

    function row(job) {
      const ended = job.finished_at || null;
      const duration = job.started_at ? (ended || Date.now() / 1000) - job.started_at : null;
      const tr = h("tr", { dataset: { jobId: job.id, status: job.status } },
        h("td", { "data-label": "Job" }, h("a", { href: `/jobs/${job.id}`, title: job.id }, h("code", null, shortId(job.id)))),
        h("td", { "data-label": "Function" }, job.function),
        h("td", { "data-label": "Input", class: "input-cell", title: inputSummary(job.input, 300) || null },
          inputSummary(job.input) || h("span", { class: "muted" }, "–")),
        h("td", { "data-label": "Status" }, statusBadge(job.status)),
        h("td", { "data-label": "Submitted", title: formatTime(job.created_at), class: "ago", dataset: { ts: job.created_at } }, formatAgo(job.created_at)),
        h("td", { "data-label": "Duration", class: "num" }, duration === null ? "–" : formatDuration(Math.max(0, duration))),
        h("td", { "data-label": "Attempts", class: "num hide-narrow" }, `${job.attempts}/${job.max_attempts}`));
      tr._job = job;
      return tr;
    }

    function upsert(job, { prepend }) {
      const existing = rows.get(job.id);
      if (!matches(job)) {
        if (existing) { existing.remove(); rows.delete(job.id); }
        updateCount();
        return;
      }
      const tr = row(job);
      if (existing) existing.replaceWith(tr);
      else if (prepend) tbody.prepend(tr);
      else tbody.append(tr);
      rows.set(job.id, tr);
      updateCount();
    }

    function updateCount() {
      empty.hidden = rows.size > 0;
      count.textContent = `${rows.size} job${rows.size === 1 ? "" : "s"} shown`;
    }

    async function load(reset) {
      const query = new URLSearchParams({ limit: "50" });
      if (filters.function) query.set("function", filters.function);
      if (filters.status) query.set("status", filters.status);
      if (!reset && next !== null) query.set("before", String(next));
      const token = {};
      loading = token;
      const data = await api(`/api/jobs?${query}`);
      if (loading !== token) return;
      if (reset) { clear(tbody); rows.clear(); }
      for (const job of data.jobs || []) upsert(job, { prepend: false });
      next = data.next;
      more.hidden = next === null || next === undefined;
      updateCount();
    }

    function applyFilters() {
      filters.function = fnSelect.value;
      filters.status = statusSelect.value;
      const query = new URLSearchParams();
      if (filters.function) query.set("function", filters.function);
      if (filters.status) query.set("status", filters.status);
      history.replaceState(null, "", `/jobs${query.toString() ? `?${query}` : ""}`);
      load(true).catch(showLoadError);
    }

    const errorBox = h("div", { class: "alert alert-error", role: "alert", hidden: true });
    function showLoadError(error) {
      errorBox.hidden = false;
      errorBox.textContent = `Could not load jobs: ${error.message}`;
    }

    fnSelect.addEventListener("change", applyFilters);
    statusSelect.addEventListener("change", applyFilters);
    more.addEventListener("click", () => load(false).catch(showLoadError));

    append(clear(root), [
      pageHeader("Jobs", "Your jobs, newest first, updated live.", conn),
      h("div", { class: "card" },
        h("div", { class: "filters", role: "group", "aria-label": "Filters" },
          h("div", { class: "field field-inline" }, h("label", { for: "filter-function" }, "Function"), fnSelect),
          h("div", { class: "field field-inline" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
          count),
        errorBox,
        h("div", { class: "table-wrap" },
          h("table", { class: "jobs-table" },
            h("thead", null, h("tr", null, ["Job", "Function", "Input", "Status", "Submitted", "Duration"].map((t) => h("th", { scope: "col", class: t === "Duration" ? "num" : null }, t)),
              h("th", { scope: "col", class: "num hide-narrow" }, "Attempts"))),
            tbody)),
        empty, h("div", { class: "form-actions" }, more)),
    ]);

    await load(true);
    const stream = new LiveStream({
      url: () => "/api/events",
      types: ["resync", "job"],
      onState: (state) => conn.set(state),
      onEvent: (type, event) => {
        if (type === "resync") {
          load(true).then(() => { errorBox.hidden = true; }).catch(showLoadError);
          return;
        }
        let job;
        try { job = JSON.parse(event.data); } catch { return; }
        upsert(job, { prepend: !rows.has(job.id) });
        notifier.ended(job);
      },
      beforeReconnect: () => api("/api/jobs?limit=1").then(() => true),
    });
    stream.start();
    const timer = setInterval(() => {
      for (const tr of rows.values()) {
        const cell = tr.querySelector(".ago");
        if (cell) cell.textContent = formatAgo(Number(cell.dataset.ts));
      }
    }, 10000);
    return { cleanup: () => { stream.stop(); clearInterval(timer); } };
  }

  // -- the dashboard -------------------------------------------------------------------
  async function pageDashboard(root) {
    document.title = "Dashboard · genq";
    activeFunction = null;
    markActiveFunction();
    const conn = connectionIndicator("Live figures from /api/stats");
    const updated = h("span", { class: "muted small", "aria-live": "off" });
    const tiles = h("div", { class: "tiles" });
    const tbody = h("tbody");
    const workersEl = h("ul", { class: "workers" });
    const chart = h("div", { class: "chart", "aria-hidden": "true" });
    const samples = [];
    let timer = null;
    let inFlight = false;
    let stopped = false;
    let failures = 0;

    const tile = (label, value, metric, hint) => h("div", { class: "tile", dataset: { metric } },
      h("span", { class: "tile-label" }, label),
      h("span", { class: "tile-value" }, value),
      hint ? h("span", { class: "tile-hint muted" }, hint) : null);

    // the models a worker holds loaded (label, load time) and, per function, whether its
    // models are ready, still loading (for how long) or failed (with the error)
    function workerModels(w) {
      const models = w.models || [];
      if (!models.length) return null;
      return h("ul", { class: "worker-models", "aria-label": "Loaded models" }, models.map((m) =>
        h("li", { class: "worker-model", dataset: { model: m.label || m.name } },
          h("code", null, m.label || m.name),
          m.load_seconds != null ? h("span", { class: "muted small" }, ` loaded in ${formatDuration(m.load_seconds)}`) : null)));
    }

    function workerStates(w) {
      const states = Object.entries(w.states || {});
      if (!states.length) return null;
      const now = Date.now() / 1000;
      return h("ul", { class: "worker-states", "aria-label": "Functions" }, states.map(([fn, st]) => {
        let text = st.state;
        if (st.state === "loading" && st.since) text = `loading ${formatDuration(Math.max(0, now - st.since))}`;
        if (st.state === "failed") {
          const bad = (st.models || []).find((m) => m.state === "failed");
          if (bad) text = `failed: ${bad.error}${bad.retry_at ? `, retrying in ${formatDuration(Math.max(0, bad.retry_at - now))}` : ""}`;
        }
        return h("li", { class: `worker-state state-${st.state}`, dataset: { fn, state: st.state } },
          h("span", { class: "worker-fn" }, fn), " ", h("span", { class: "worker-state-text" }, text));
      }));
    }

    function render(stats) {
      const fns = Object.entries(stats.functions || {});
      const sum = (key) => fns.reduce((n, [, f]) => n + (f[key] || 0), 0);
      const totals = { succeeded: 0, failed: 0, cancelled: 0, expired: 0 };
      for (const [, f] of fns) for (const [k, v] of Object.entries(f.totals || {})) totals[k] = (totals[k] || 0) + v;
      const workers = stats.workers || [];
      const healthy = workers.filter((w) => w.healthy).length;
      clear(tiles).append(
        tile("Queued", formatNumber(sum("queue_depth")), "queued"),
        tile("Running", formatNumber(sum("running")), "running", `of ${formatNumber(sum("concurrency"))} slots`),
        tile("Throughput", formatNumber(sum("throughput_per_min")), "throughput", "jobs finished / min"),
        tile("Failures", formatNumber(sum("failed_recent")), "failures", "last 15 min"),
        tile("Completed", formatNumber(totals.succeeded), "completed", "all time"),
        tile("Clients", formatNumber(stats.streams || 0), "streams", "connected event streams"),
        tile("Workers", `${healthy}/${workers.length}`, "workers", "healthy"),
        tile("Uptime", formatDuration(stats.uptime), "uptime"));
      clear(tbody);
      for (const [name, f] of fns) {
        const t = f.totals || {};
        const load = f.concurrency ? Math.min(1, f.running / f.concurrency) : 0;
        const meter = h("span", { class: "meter", "aria-hidden": "true" }, h("span", { class: "meter-fill" }));
        meter.firstChild.style.width = `${Math.round(load * 100)}%`;
        const cell = (metric, value, extra) => h("td", { class: `num ${extra || ""}`, dataset: { metric }, "data-label": metricLabels[metric] }, value);
        tbody.append(h("tr", { dataset: { fn: name } },
          h("th", { scope: "row" }, h("a", { href: `/functions/${encodeURIComponent(name)}` }, name)),
          cell("queue_depth", formatNumber(f.queue_depth)),
          h("td", { class: "num", dataset: { metric: "running" }, "data-label": "Running" },
            h("span", { class: "running-cell" }, meter, `${f.running}/${f.concurrency}`)),
          cell("throughput", formatNumber(f.throughput_per_min)),
          cell("run", `${formatDuration(f.run_p50)} / ${formatDuration(f.run_p95)}`),
          cell("latency", `${formatDuration(f.latency_p50)} / ${formatDuration(f.latency_p95)}`, "hide-narrow"),
          cell("failed_recent", formatNumber(f.failed_recent), f.failed_recent ? "bad" : ""),
          h("td", { class: "num totals-cell", "data-label": "Totals" },
            h("span", { class: "totals", title: "succeeded · failed · cancelled or expired, since the server started" },
              h("span", { class: "t-ok", dataset: { metric: "succeeded" }, "aria-label": `${t.succeeded || 0} succeeded` }, formatNumber(t.succeeded || 0)),
              h("span", { class: "t-failed", dataset: { metric: "failed" }, "aria-label": `${t.failed || 0} failed` }, formatNumber(t.failed || 0)),
              h("span", { class: "t-other", dataset: { metric: "cancelled" }, "aria-label": `${(t.cancelled || 0) + (t.expired || 0)} cancelled or expired` },
                formatNumber((t.cancelled || 0) + (t.expired || 0)))))));
      }
      clear(workersEl);
      if (!workers.length) workersEl.append(h("li", { class: "muted" }, "No in-process worker (workers run elsewhere)."));
      for (const w of workers) {
        workersEl.append(h("li", { class: "worker", dataset: { healthy: String(Boolean(w.healthy)), workerId: w.id } },
          h("div", { class: "worker-head" },
            h("span", { class: `health ${w.healthy ? "ok" : "bad"}` }, w.healthy ? "healthy" : "unhealthy"),
            h("code", { class: "worker-id" }, w.id),
            h("span", { class: "worker-device", title: "device" }, w.device || "cpu"),
            h("span", { class: "muted small" }, `${w.running} running`)),
          workerModels(w), workerStates(w)));
      }
      samples.push({ queued: sum("queue_depth"), running: sum("running") });
      if (samples.length > 90) samples.shift();
      drawChart();
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    }

    function drawChart() {
      const width = 600;
      const height = 80;
      const max = Math.max(1, ...samples.map((s) => Math.max(s.queued, s.running)));
      const coords = (key) => samples.map((s, i) => [
        samples.length > 1 ? (i / (samples.length - 1)) * width : width,
        height - 2 - (s[key] / max) * (height - 8)]);
      const ns = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
      svg.setAttribute("preserveAspectRatio", "none");
      for (const [key, cls] of [["queued", "queued"], ["running", "running"]]) {
        const points = coords(key);
        if (points.length === 1) points.unshift([0, points[0][1]]);
        const line = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
        const area = document.createElementNS(ns, "polygon");
        area.setAttribute("points", `0,${height} ${line} ${width},${height}`);
        area.setAttribute("class", `area-${cls}`);
        const polyline = document.createElementNS(ns, "polyline");
        polyline.setAttribute("points", line);
        polyline.setAttribute("class", `line-${cls}`);
        polyline.setAttribute("vector-effect", "non-scaling-stroke");
        svg.append(area, polyline);
      }
      clear(chart).append(svg, h("span", { class: "chart-max" }, `max ${max}`));
    }

    async function refresh() {
      if (inFlight || stopped) return;
      inFlight = true;
      try {
        render(await api("/api/stats"));
        failures = 0;
        conn.set("live");
      } catch (error) {
        if (error instanceof KeyDeclined) { stop(); conn.set("offline", "API key needed"); return; }
        failures += 1;
        conn.set("reconnecting");
      } finally {
        inFlight = false;
      }
    }

    let soon = null;
    const feed = new LiveStream({
      url: () => "/api/events",
      types: ["resync", "job"],
      onEvent: () => { clearTimeout(soon); soon = setTimeout(refresh, 250); },
      beforeReconnect: () => api("/api/stats").then(() => true),
    });

    function stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(soon);
      feed.stop();
    }

    const metricLabels = {
      queue_depth: "Queued", throughput: "Per min", run: "Run p50/p95",
      latency: "Latency p50/p95", failed_recent: "Failed 15 min",
    };

    append(clear(root), [
      pageHeader("Dashboard", "Queues, workers and latency, live.", updated, conn),
      tiles,
      h("div", { class: "card mt" },
        h("h2", { class: "card-title" }, "Functions"),
        h("div", { class: "table-wrap" }, h("table", { class: "stats-table" },
          h("thead", null, h("tr", null,
            h("th", { scope: "col" }, "Function"),
            h("th", { scope: "col", class: "num" }, "Queued"),
            h("th", { scope: "col", class: "num" }, "Running"),
            h("th", { scope: "col", class: "num" }, "Per min"),
            h("th", { scope: "col", class: "num", title: "run time, median / 95th percentile (last 15 min)" }, "Run p50/p95"),
            h("th", { scope: "col", class: "num hide-narrow", title: "queue wait + run time, median / 95th percentile (last 15 min)" }, "Latency p50/p95"),
            h("th", { scope: "col", class: "num", title: "failed in the last 15 minutes" }, "Failed 15m"),
            h("th", { scope: "col", class: "num", title: "succeeded · failed · cancelled or expired, since the server started" }, "Totals"))),
          tbody))),
      h("div", { class: "dash-row mt" },
        h("div", { class: "card" }, h("h2", { class: "card-title" }, "Queue and running, last 3 minutes"),
          chart, h("p", { class: "legend small" },
            h("span", { class: "key key-queued" }), "queued ", h("span", { class: "key key-running" }), "running")),
        h("div", { class: "card" }, h("h2", { class: "card-title" }, "Workers"), workersEl)),
    ]);
    await refresh();
    timer = setInterval(refresh, 2000);
    feed.start();
    return { cleanup: stop };
  }

  // ---------------------------------------------------------------------------------
  // Router
  // ---------------------------------------------------------------------------------
  const ROUTES = [
    [/^\/$/, () => ({ nav: "functions", page: pageHome })],
    [/^\/functions\/([^/]+)$/, (m) => ({ nav: "functions", page: (root) => pageWorkbench(root, { fnName: decodeURIComponent(m[1]) }) })],
    [/^\/jobs$/, () => ({ nav: "jobs", page: pageJobs })],
    [/^\/jobs\/([^/]+)$/, (m) => ({ nav: "functions", page: (root) => pageWorkbench(root, { jobId: decodeURIComponent(m[1]) }) })],
    [/^\/dashboard$/, () => ({ nav: "dashboard", page: pageDashboard })],
  ];

  function match(pathname) {
    for (const [pattern, make] of ROUTES) {
      const m = pathname.match(pattern);
      if (m) return make(m);
    }
    return null;
  }

  function navigate(url) {
    history.pushState(null, "", url);
    route({ focus: true });
  }

  async function route({ focus = false } = {}) {
    const token = ++routeToken;
    const root = main();
    const target = match(location.pathname);
    for (const a of document.querySelectorAll(".topnav a")) {
      if (target && a.dataset.nav === target.nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const previous = current;
    if (!target) {
      if (previous && previous.cleanup) previous.cleanup();
      current = null;
      append(clear(root), errorPage("Page not found", new Error(`Nothing at ${location.pathname}.`)));
      return;
    }
    let page;
    try {
      await session.ensure(); // before any image or download link of the page is shown
      page = await target.page(root);
    } catch (error) {
      if (token !== routeToken) return;
      if (previous && previous.cleanup) previous.cleanup();
      current = null;
      const title = error instanceof NetworkError ? "Server unreachable"
        : error instanceof KeyDeclined ? "API key required" : "Something went wrong";
      append(clear(root), errorPage(title, error, () => route({ focus: true })));
      return;
    }
    if (token !== routeToken) {
      if (page && page !== previous && page.cleanup) page.cleanup();
      return;
    }
    if (previous && previous !== page && previous.cleanup) previous.cleanup();
    current = page || {};
    if (focus && page !== previous) {
      const heading = root.querySelector("h1");
      if (heading) heading.focus({ preventScroll: true });
      window.scrollTo(0, 0);
    }
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest && event.target.closest("a");
    if (!a || event.defaultPrevented || event.button !== 0 || a.target || a.hasAttribute("download")
      || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !match(url.pathname)) return;
    event.preventDefault();
    if (url.pathname + url.search === location.pathname + location.search) return;
    navigate(url.pathname + url.search);
  });

  window.addEventListener("popstate", () => route({ focus: true }));

  document.addEventListener("DOMContentLoaded", () => {
    updateKeyButton();
    $("#key-button").addEventListener("click", () => {
      auth.ask(auth.key ? "Enter a new API key, or forget the saved one" : undefined)
        .then(() => { functionsPromise = null; route(); }, () => {});
    });
    loadFunctions().catch(() => {});
    route();
    // Renew the session while the page stays open, and on waking from a sleeping tab.
    setInterval(() => session.ensure(), 5 * 60 * 1000);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") session.ensure();
    });
  });

  // for tests and debugging in the console
  window.genq = { api, auth, route, session };
})();
