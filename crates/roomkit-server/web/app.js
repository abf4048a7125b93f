// roomkit web chat: plain JavaScript speaking the roomkit WebSocket protocol (docs/protocol.md).
//
// Every piece of text that comes from a user or the server is put on the page as a text node
// (textContent / createTextNode), never parsed as HTML.

// ---------------------------------------------------------------------------------------------
// Result codes → what to tell a person. The server's `msg` is shown beneath as the detail.

const CODES = {
  1: ["FAILURE", "Something went wrong."],
  1000: ["MALFORMED_FRAME", "The server could not read a request from this page."],
  1001: ["UNKNOWN_OPERATION", "This server does not support that yet."],
  1002: ["BAD_REQUEST", "Some of what you entered is not valid."],
  1003: ["FRAME_TOO_LARGE", "That is too large to send."],
  1004: ["RATE_LIMITED", "Slow down: too many requests in a short time."],
  1005: ["UNSUPPORTED_FRAME", "The server refused a frame of this kind."],
  1006: ["TIMEOUT", "The server did not answer in time."],
  1007: ["TOO_MANY_PENDING", "Still loading earlier messages: try again once they have arrived."],
  1100: ["UNAUTHENTICATED", "Sign-in failed: the token is not valid for this account."],
  1101: ["AUTH_EXPIRED", "Your token has expired. Sign in again with a new one."],
  1102: ["FORBIDDEN", "You are not allowed to do that."],
  1103: ["ALREADY_LOGGED_IN", "You are already signed in."],
  1104: ["RESERVED_ACCOUNT", "That account id is kept for the server itself: pick another."],
  2000: ["ROOM_NOT_EXIST", "There is no room with this id."],
  2001: ["ROOM_ALREADY_EXISTS", "A room with this id already exists. Pick another id, or join it."],
  2002: ["ROOM_ENDED", "This room has ended."],
  2003: ["ROOM_LOCKED", "This room is locked: nobody new may join."],
  2004: ["BAD_PASSWORD", "Wrong password for this room."],
  2005: ["ROOM_FULL", "This room is full."],
  2006: ["NOT_IN_ROOM", "You are not in this room. Join it first."],
  2007: ["MEMBER_NOT_FOUND", "That member is not here (not in the chatroom any more?)."],
  2008: ["OVER_ROLE_LIMIT_COUNT", "That role is taken: the room already has a host."],
  2009: ["TOO_MANY_ROOMS", "You have as many rooms as you may create. End one of them first."],
  3000: ["CHATROOM_NOT_ENABLED", "This room has no chatroom."],
  3001: ["NOT_IN_CHATROOM", "Join the chatroom first."],
  3002: ["MESSAGE_TOO_LONG", "That message is too long."],
  3003: ["MESSAGE_NOT_FOUND", "That message is gone: it cannot be found any more."],
  3004: ["MESSAGE_RATE_LIMITED", "Slow down: you are sending messages too fast."],
  3005: ["CHATROOM_RATE_LIMITED", "The chatroom is very busy right now. Try again in a moment."],
  5000: ["SERVER_BUSY", "The server is busy. Try again in a moment."],
  5001: ["INTERNAL", "The server ran into an internal error."],
  5002: ["SLOW_CONSUMER", "The connection fell behind and the server closed it. Sign in again to continue."],
  5003: ["CONNECTION_CLOSED", "The connection to the server is closed."],
  5004: ["SERVER_SHUTTING_DOWN", "The server is shutting down."],
  5005: ["TOO_MANY_CONNECTIONS", "Too many connections from this account or address. Close another window first."],
  5006: ["KEEPALIVE_TIMEOUT", "The connection went quiet and the server closed it. Sign in again to continue."],
};

const END_REASONS = {
  leave_by_self: "you left it",
  kick_out: "you were removed from it",
  close_by_member: "the host ended it",
  end_of_life: "it stayed empty too long",
  all_members_out: "everyone left",
  close_by_backend: "the server's operator ended it",
  login_state_error: "your sign-in is no longer valid",
  kicked_by_other_device: "you joined it from another window or device",
  server_shutdown: "the server is shutting down",
};

class RoomkitError extends Error {
  constructor(code, msg) {
    super(msg);
    this.code = code;
    this.msg = msg;
  }
}

/** The friendly title and the technical detail for an error. */
function describe(error) {
  if (error instanceof RoomkitError) {
    const known = CODES[error.code];
    const title = known ? known[1] : (error.msg || `Failed with code ${error.code}.`);
    const name = known ? ` ${known[0]}` : "";
    return { title, detail: `code ${error.code}${name}${error.msg ? ` — ${error.msg}` : ""}` };
  }
  return { title: "Something went wrong.", detail: String(error && error.message ? error.message : error) };
}

// ---------------------------------------------------------------------------------------------
// The connection: requests with ids, responses matched by id, events to a callback.

const REQUEST_TIMEOUT_MS = 10000;

/** Members asked for per "Load more" (the server's limit is 1–100). */
const MEMBER_PAGE = 50;

/** What the like button sends: an ephemeral custom message (not stored, not in history). */
const LIKE = JSON.stringify({ type: "like" });

class Connection {
  constructor(url, { onEvent, onClose }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
    this.closedByUs = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => { opened = true; resolve(); };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = (ev) => {
        const error = closeError(ev);
        for (const { reject: fail, timer } of this.pending.values()) {
          clearTimeout(timer);
          fail(error);
        }
        this.pending.clear();
        if (!opened) {
          reject(new RoomkitError(5003, `could not connect to ${this.url}`));
        } else if (!this.closedByUs) {
          this.onClose(error);
        }
      };
    });
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame && typeof frame.event === "string") {
      this.onEvent(frame);
      return;
    }
    const waiting = frame ? this.pending.get(frame.id) : undefined;
    if (!waiting) {
      if (frame && frame.code) console.warn("roomkit: unmatched error", frame);
      return;
    }
    this.pending.delete(frame.id);
    clearTimeout(waiting.timer);
    if (frame.code === 0) waiting.resolve(frame.data || {});
    else waiting.reject(new RoomkitError(frame.code, frame.msg || ""));
  }

  call(op, params = {}) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new RoomkitError(5003, "not connected"));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RoomkitError(1006, `no answer to ${op} within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ id, op, ...params }));
    });
  }

  close() {
    this.closedByUs = true;
    if (this.ws) this.ws.close(1000, "signed out");
  }
}

/** The server's close reason is "<code> <reason>". */
function closeError(ev) {
  const match = /^(\d+) (.*)$/s.exec(ev.reason || "");
  if (match) return new RoomkitError(Number(match[1]), match[2]);
  return new RoomkitError(5003, ev.reason || `the connection closed (WebSocket code ${ev.code})`);
}

// ---------------------------------------------------------------------------------------------
// DOM helpers: elements from text only.

const $ = (id) => document.getElementById(id);

/** `el("li", {class: "x"}, "text", child)`: strings become text nodes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function show(view) {
  for (const id of ["view-signin", "view-lobby", "view-room"]) $(id).hidden = id !== view;
}

function showError(error) {
  const { title, detail } = describe(error);
  $("banner-title").textContent = title;
  $("banner-detail").textContent = detail;
  $("banner").hidden = false;
}

function hideError() {
  $("banner").hidden = true;
}

function setStatus(state) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = state;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function randomId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function messageId() {
  return crypto.randomUUID ? crypto.randomUUID().replaceAll("-", "") : randomId("m") + randomId("");
}

/** Runs `action` with `button` disabled; shows any error. */
async function busy(button, action) {
  if (button) button.disabled = true;
  try {
    hideError();
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// State

const state = {
  dev: false,
  conn: null,
  me: null, // {user_uuid, name}
  room: null, // see enterRoom
};

// ---------------------------------------------------------------------------------------------
// Signing in

async function loadConfig() {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    if (response.ok) state.dev = Boolean((await response.json()).dev);
  } catch {
    state.dev = false;
  }
  $("dev-hint").hidden = !state.dev;
  $("token-optional").hidden = !state.dev;
  $("token").required = !state.dev;
}

async function devToken(account) {
  const response = await fetch(`/dev/token?account=${encodeURIComponent(account)}`, { method: "POST" });
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = {};
  }
  if (!response.ok || !body.token) {
    throw new RoomkitError(body.code || 1, body.msg || `the token endpoint answered HTTP ${response.status}`);
  }
  return body.token;
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1`;
}

async function signIn(account, token) {
  if (!token) {
    if (!state.dev) throw new RoomkitError(1100, "enter the token your application gave you");
    token = await devToken(account);
  }
  setStatus("connecting");
  const conn = new Connection(wsUrl(), { onEvent, onClose: connectionLost });
  try {
    await conn.open();
    const me = await conn.call("login", { account_id: account, token });
    state.conn = conn;
    state.me = me;
  } catch (error) {
    conn.close();
    setStatus("offline");
    throw error;
  }
  setStatus("online");
  localStorage.setItem("roomkit.account", account);
  $("whoami").textContent = state.me.name === state.me.user_uuid
    ? state.me.user_uuid
    : `${state.me.name} (${state.me.user_uuid})`;
  $("whoami").hidden = false;
  $("signout").hidden = false;
  if (!$("display-name").value) $("display-name").value = localStorage.getItem("roomkit.name") || state.me.name;
  toLobby();
}

async function signOut() {
  const conn = state.conn;
  const room = state.room;
  if (conn && room) {
    // Leave explicitly, so the others see it at once.
    await Promise.race([
      conn.call("leave_room", { room_uuid: room.info.room_uuid }).catch(() => {}),
      new Promise((resolve) => { setTimeout(resolve, 1500); }),
    ]);
  }
  if (conn) conn.close();
  resetSession();
  hideError();
}

function connectionLost(error) {
  resetSession();
  showError(error);
}

function resetSession() {
  state.conn = null;
  state.me = null;
  state.room = null;
  setStatus("offline");
  $("whoami").hidden = true;
  $("signout").hidden = true;
  show("view-signin");
}

// ---------------------------------------------------------------------------------------------
// Lobby

/** The room id of a `#room=` link, or null when there is none; throws on a malformed one. */
function linkedRoom() {
  if (!location.hash.startsWith("#room=")) return null;
  try {
    return decodeURIComponent(location.hash.slice(6));
  } catch {
    throw new RoomkitError(1002, "the room link is malformed (its #room= part is not valid percent-encoding)");
  }
}

function toLobby() {
  state.room = null;
  let linked = null;
  try {
    linked = linkedRoom();
  } catch (error) {
    // A broken link must not keep anyone out of the lobby: say so, and carry on.
    history.replaceState(null, "", location.pathname);
    showError(error);
  }
  if (linked !== null) $("join-uuid").value = linked;
  if (!$("create-uuid").value) $("create-uuid").value = randomId("room-");
  show("view-lobby");
}

function displayName() {
  const input = $("display-name");
  const name = input.value.trim() || state.me.name;
  localStorage.setItem("roomkit.name", name);
  return name;
}

async function createRoom() {
  const room_uuid = $("create-uuid").value.trim();
  const password = $("create-password").value;
  const max = $("create-max").value.trim();
  const params = {
    room_uuid,
    room_name: $("create-name").value.trim() || room_uuid,
    enable_chatroom: $("create-chatroom").checked,
  };
  if (password) params.password = password;
  if (max) params.max_members = Number(max);
  await state.conn.call("create_room", params);
  $("create-uuid").value = "";
  $("create-password").value = "";
  await joinRoom(room_uuid, password, "host");
}

async function joinRoom(room_uuid, password, role) {
  const params = { room_uuid, user_name: displayName() };
  if (password) params.password = password;
  if (role) params.role = role;
  const data = await state.conn.call("join_room", params);
  $("join-password").value = "";
  enterRoom(data);
}

// ---------------------------------------------------------------------------------------------
// A joined room

/**
 * A joined room from the join answer: the room, the joiner, the host, the exact online counts
 * and the first page of members (every member of a small room; `next_cursor` says there are
 * more, read with "Load more"). In a large room `members` holds only the members seen.
 */
function enterRoom(joined) {
  const info = joined.room;
  const members = new Map((joined.members || []).map((m) => [m.uuid, m]));
  for (const m of [joined.host, joined.member]) if (m) members.set(m.uuid, m);
  state.room = {
    info,
    members,
    counts: { ...(joined.counts || { room: members.size, chatroom: 0 }) },
    nextCursor: joined.next_cursor || null,
    likes: 0,
    messages: new Map(), // message_uuid → {message, node}
    recalled: new Set(), // message uuids recalled before (or without) being shown
  };
  history.replaceState(null, "", `#room=${encodeURIComponent(info.room_uuid)}`);
  $("messages").replaceChildren();
  $("likes").textContent = "";
  $("text").value = "";
  renderRoomHead();
  renderMembers();
  notice(`You joined ${info.room_name}.`);
  if (!info.chatroom_enabled) notice("This room has no chatroom.");
  show("view-room");
}

function inChat() {
  const room = state.room;
  const me = room && room.members.get(state.me.user_uuid);
  return Boolean(me && me.is_in_chatroom);
}

function renderRoomHead() {
  const { info } = state.room;
  $("room-title").textContent = info.room_name;
  $("room-uuid").textContent = info.room_uuid;
  const flags = [];
  if (info.locked) flags.push("locked");
  if (info.has_password) flags.push("password");
  if (info.max_members) flags.push(`max ${info.max_members}`);
  if (!info.chatroom_enabled) flags.push("no chatroom");
  $("room-flags").replaceChildren(...flags.map((f) => el("span", { class: "flag" }, f)));
  const toggle = $("chat-toggle");
  toggle.hidden = !info.chatroom_enabled;
  toggle.textContent = inChat() ? "Leave chatroom" : "Join chatroom";
  const inside = inChat();
  for (const id of ["to", "text", "send", "like"]) $(id).disabled = !inside;
  $("text").placeholder = inside
    ? "Message"
    : info.chatroom_enabled ? "Join the chatroom to chat" : "This room has no chatroom";
}

function renderMembers() {
  const room = state.room;
  const list = [...room.members.values()];
  list.sort((a, b) => (a.role === "host" ? -1 : 0) - (b.role === "host" ? -1 : 0) || a.name.localeCompare(b.name));
  $("members").replaceChildren(...list.map((m) => {
    const isMe = m.uuid === state.me.user_uuid;
    return el("li", {
      class: `member${m.is_in_chatroom ? " in-chat" : ""}`,
      dataset: { uuid: m.uuid },
      title: `${m.name} (${m.uuid})${m.is_in_chatroom ? ", in the chatroom" : ", not in the chatroom"}`,
    },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("span", { class: "name" }, m.name),
    idTag(m.name, m.uuid),
    isMe ? el("span", { class: "tag" }, "you") : null,
    m.role === "host" ? el("span", { class: "tag" }, "host") : null);
  }));
  // The exact online counts from the server, not the length of a list that may be partial.
  $("member-count").textContent = `${room.counts.room} online · ${room.counts.chatroom} chatting`;
  const more = $("members-more");
  more.hidden = !room.nextCursor;
  more.textContent = `Load more (${list.length} of ${room.counts.room} shown)`;

  // Recipients: everyone, or one member in the chatroom.
  const select = $("to");
  const chosen = select.value;
  const options = [el("option", { value: "" }, "Everyone")];
  for (const m of list) {
    if (m.uuid !== state.me.user_uuid && m.is_in_chatroom) {
      options.push(el("option", { value: m.uuid }, `${who(m.name, m.uuid)}, private`));
    }
  }
  select.replaceChildren(...options);
  select.value = options.some((o) => o.value === chosen) ? chosen : "";
  renderRoomHead();
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function notice(text, className = "notice") {
  $("messages").append(el("li", { class: className }, text));
  scrollToEnd();
}

/**
 * A member as text: the display name with the account id beside it, since display names are
 * chosen freely and two members may pick the same one. Just the id when the two are equal.
 */
function who(name, uuid) {
  return name === uuid ? uuid : `${name} (${uuid})`;
}

/** The account id as its own element, beside a display name that differs from it. */
function idTag(name, uuid) {
  return name === uuid ? null : el("span", { class: "uuid", title: "account id" }, uuid);
}

function nameOf(uuid, fallback) {
  const member = state.room && state.room.members.get(uuid);
  return member ? member.name : (fallback || uuid);
}

/** Shows a message (or applies a notification), in `seq` order, once. */
function showMessage(message) {
  const room = state.room;
  if (!room) return;
  if (message.message_type === "notification") {
    if (message.event_type === "message_recall" && message.recalled_message_id) {
      recalled(message.recalled_message_id, message.operate_by);
    }
    return;
  }
  if (message.persist === false) {
    ephemeral(message);
    return;
  }
  if (room.messages.has(message.message_uuid)) return;
  const mine = message.from_user_uuid === state.me.user_uuid;
  const to = message.to_user_uuid_list;
  const classes = ["msg"];
  if (mine) classes.push("mine");
  if (to) classes.push("direct");
  if (message.message_type === "custom") classes.push("custom");

  const head = el("div", { class: "msg-head" },
    el("span", { class: "from" }, mine ? "You" : message.from_nick),
    mine ? null : idTag(message.from_nick, message.from_user_uuid),
    message.from_backend ? el("span", { class: "tag" }, "system") : null,
    to ? el("span", { class: "to" }, mine
      ? `→ ${to.map((u) => who(nameOf(u), u)).join(", ")} (private)`
      : "→ you (private)") : null,
    el("time", { datetime: new Date(message.time).toISOString() }, clock(message.time)));
  const body = message.message_type === "custom"
    ? `[custom] ${message.attach_str}`
    : (message.text ?? "");
  const node = el("li", { class: classes.join(" "), dataset: { uuid: message.message_uuid, seq: message.seq } },
    head, el("div", { class: "msg-text" }, body));
  // The sender may recall its own message (within the server's recall window); the host any.
  if (!message.recalled && (mine || amHost())) {
    head.append(el("button", {
      class: "link recall", type: "button", title: "Recall this message",
      onclick: (ev) => busy(ev.currentTarget, () => recall(message.message_uuid)),
    }, "Recall"));
  }
  room.messages.set(message.message_uuid, { message, node });

  // In sequence order: before the first shown message with a higher seq.
  const list = $("messages");
  const later = [...list.querySelectorAll("li.msg")].find((li) => Number(li.dataset.seq) > message.seq);
  if (later) list.insertBefore(node, later);
  else list.append(node);
  if (message.recalled || room.recalled.has(message.message_uuid)) recalled(message.message_uuid);
  if (!later) scrollToEnd();
}

/** An ephemeral message (seq 0, never stored): a like adds to the room's like count. */
function ephemeral(message) {
  const room = state.room;
  if (message.message_type === "custom" && message.attach_str === LIKE) {
    room.likes += 1;
    const likes = $("likes");
    likes.textContent = `♥ ${room.likes}`;
    likes.title = `${room.likes} likes; the last from ${who(message.from_nick, message.from_user_uuid)}`;
    likes.classList.remove("pop");
    void likes.offsetWidth; // restart the animation
    likes.classList.add("pop");
  }
}

async function like() {
  const room_uuid = state.room.info.room_uuid;
  const data = await state.conn.call("send_custom_message", { room_uuid, attach_str: LIKE, persist: false });
  if (data && data.message) showMessage({ ...data.message, persist: false });
}

/** The next page of members ("Load more"): members join the list, counts are refreshed. */
async function loadMoreMembers() {
  const room = state.room;
  if (!room.nextCursor) return;
  const page = await state.conn.call("fetch_room_members", {
    room_uuid: room.info.room_uuid,
    cursor: room.nextCursor,
    limit: MEMBER_PAGE,
  });
  if (state.room !== room) return;
  for (const m of page.members || []) room.members.set(m.uuid, m);
  room.nextCursor = page.next_cursor || null;
  if (page.counts) room.counts = { ...page.counts };
  renderMembers();
}

function amHost() {
  const me = state.room && state.room.members.get(state.me.user_uuid);
  return Boolean(me && me.role === "host");
}

/** A recalled message disappears: its text is replaced by a note. */
function recalled(messageUuid, by) {
  const room = state.room;
  room.recalled.add(messageUuid);
  const shown = room.messages.get(messageUuid);
  if (!shown || shown.node.classList.contains("recalled")) return;
  shown.node.classList.add("recalled");
  const who = by && by !== shown.message.from_user_uuid ? ` by ${nameOf(by)}` : "";
  shown.node.querySelector(".msg-text").textContent = `This message was recalled${who}.`;
  const button = shown.node.querySelector("button.recall");
  if (button) button.remove();
}

async function recall(messageUuid) {
  const room = state.room;
  const data = await state.conn.call("recall_chatroom_message", {
    room_uuid: room.info.room_uuid,
    message_uuid: messageUuid,
  });
  if (data && data.message) showMessage(data.message);
  recalled(messageUuid, state.me.user_uuid);
}

async function toggleChatroom() {
  const room_uuid = state.room.info.room_uuid;
  if (inChat()) {
    await state.conn.call("leave_chatroom", { room_uuid });
    const me = state.room.members.get(state.me.user_uuid);
    if (me && me.is_in_chatroom) state.room.counts.chatroom = Math.max(0, state.room.counts.chatroom - 1);
    if (me) me.is_in_chatroom = false;
    renderMembers();
    notice("You left the chatroom.");
    return;
  }
  await state.conn.call("join_chatroom", { room_uuid });
  // In a small room our own member_join_chatroom arrived before the response; in a large one
  // no event comes, and we count ourselves in.
  const me = state.room.members.get(state.me.user_uuid);
  if (me && !me.is_in_chatroom) {
    state.room.counts.chatroom += 1;
    notice("You joined the chatroom.");
  }
  if (me) me.is_in_chatroom = true;
  renderMembers();
  const data = await state.conn.call("fetch_chatroom_history", { room_uuid, limit: 50, order: "desc" });
  const messages = (data.messages || []).slice().reverse(); // oldest → newest
  const fresh = messages.filter((m) => !state.room.messages.has(m.message_uuid));
  if (fresh.length) {
    const firstShown = $("messages").querySelector("li.msg");
    const divider = el("li", { class: "divider" }, el("span", {}, "earlier messages"));
    if (firstShown) $("messages").insertBefore(divider, firstShown);
    else $("messages").append(divider);
  }
  for (const message of messages) showMessage(message);
  $("text").focus();
}

async function send() {
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  const room_uuid = state.room.info.room_uuid;
  const params = { room_uuid, message_uuid: messageId(), text };
  const to = $("to").value;
  if (to) params.to_user_uuid_list = [to];
  const data = await state.conn.call("send_text_message", params);
  input.value = "";
  showMessage(data.message);
}

async function leaveRoom() {
  const room_uuid = state.room.info.room_uuid;
  await state.conn.call("leave_room", { room_uuid });
  history.replaceState(null, "", location.pathname);
  toLobby();
}

// ---------------------------------------------------------------------------------------------
// Events

function onEvent(event) {
  const room = state.room;
  if (!room || event.room_uuid !== room.info.room_uuid) return;
  const members = event.members || [];
  const names = () => members.map((m) => (m.uuid === state.me.user_uuid ? "You" : who(m.name, m.uuid))).join(", ");
  switch (event.event) {
    case "member_join_room":
      for (const m of members) room.members.set(m.uuid, m);
      room.counts.room += members.length;
      renderMembers();
      notice(`${names()} joined the room.`);
      break;
    case "member_leave_room":
      for (const m of members) room.members.delete(m.uuid);
      room.counts.room = Math.max(0, room.counts.room - members.length);
      renderMembers();
      notice(`${names()} left the room.`);
      break;
    case "member_join_chatroom":
      setInChat(members, true);
      room.counts.chatroom += members.length;
      renderMembers();
      notice(`${names()} joined the chatroom.`);
      break;
    case "member_leave_chatroom":
      setInChat(members, false);
      room.counts.chatroom = Math.max(0, room.counts.chatroom - members.length);
      renderMembers();
      notice(`${names()} left the chatroom.`);
      break;
    case "members_changed":
      membersChanged(event);
      break;
    case "chatroom_messages_received":
      for (const message of event.messages || []) showMessage(message);
      break;
    case "room_lock_state_changed":
      room.info.locked = Boolean(event.locked);
      renderRoomHead();
      notice(event.locked ? "The room was locked." : "The room was unlocked.");
      break;
    case "room_properties_changed":
      Object.assign(room.info.properties, event.properties || {});
      break;
    case "room_properties_deleted":
      for (const key of event.keys || []) delete room.info.properties[key];
      break;
    case "room_end": {
      const why = END_REASONS[event.reason] || "it ended";
      toLobby();
      history.replaceState(null, "", location.pathname);
      showError(new RoomkitError(2002, `${room.info.room_name} ended: ${why}`));
      break;
    }
    default:
      break; // unknown events are ignored, as the protocol asks
  }
}

/** Marks members in or out of the chatroom; members not seen before are seen now. */
function setInChat(members, inside) {
  const room = state.room;
  for (const m of members) {
    const known = room.members.get(m.uuid) || { ...m };
    known.is_in_chatroom = inside;
    room.members.set(m.uuid, known);
  }
}

/**
 * A large room's presence digest: exact counts, and some of those who came and went by name
 * (never ourselves: we know our own comings and goings from our own calls).
 */
function membersChanged(digest) {
  const room = state.room;
  const others = (list) => (list || []).filter((m) => m.uuid !== state.me.user_uuid);
  const told = (list, total, what) => {
    if (!total) return;
    const named = list.map((m) => who(m.name, m.uuid));
    const rest = total - named.length;
    if (rest > 0) named.push(`${rest} ${named.length ? "more" : (rest === 1 ? "member" : "members")}`);
    notice(`${named.join(", ")} ${what}.`);
  };
  const joined = others(digest.joined);
  const left = others(digest.left);
  const entered = others(digest.chatroom_joined);
  const wentOut = others(digest.chatroom_left);
  for (const m of joined) room.members.set(m.uuid, m);
  setInChat(entered, true);
  setInChat(wentOut, false);
  for (const m of left) room.members.delete(m.uuid);
  if (digest.counts) room.counts = { ...digest.counts };
  renderMembers();
  // How many, without ourselves when we are named (we know our own changes).
  const total = (count, list, mine) => (count || 0) - (list || []).length + mine.length;
  told(joined, total(digest.joined_count, digest.joined, joined), "joined the room");
  told(entered, total(digest.chatroom_joined_count, digest.chatroom_joined, entered), "joined the chatroom");
  told(wentOut, total(digest.chatroom_left_count, digest.chatroom_left, wentOut), "left the chatroom");
  told(left, total(digest.left_count, digest.left, left), "left the room");
}

// ---------------------------------------------------------------------------------------------
// Wiring

function onSubmit(id, action) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const button = $(id).querySelector("button[type=submit]");
    busy(button, action);
  });
}

onSubmit("signin-form", () => signIn($("account").value.trim(), $("token").value.trim()));
onSubmit("create-form", createRoom);
onSubmit("join-form", () => joinRoom($("join-uuid").value.trim(), $("join-password").value));
onSubmit("composer", send);
$("chat-toggle").addEventListener("click", (ev) => busy(ev.currentTarget, toggleChatroom));
$("leave-room").addEventListener("click", (ev) => busy(ev.currentTarget, leaveRoom));
$("members-more").addEventListener("click", (ev) => busy(ev.currentTarget, loadMoreMembers));
$("like").addEventListener("click", (ev) => busy(ev.currentTarget, like));
$("signout").addEventListener("click", signOut);
$("banner-close").addEventListener("click", hideError);
$("copy-link").addEventListener("click", async () => {
  const link = `${location.origin}/#room=${encodeURIComponent(state.room.info.room_uuid)}`;
  try {
    await navigator.clipboard.writeText(link);
    $("copy-link").textContent = "Copied";
  } catch {
    $("copy-link").textContent = link;
  }
  setTimeout(() => { $("copy-link").textContent = "Copy link"; }, 2500);
});

$("account").value = localStorage.getItem("roomkit.account") || "";
loadConfig();
document.documentElement.dataset.ready = "true";
