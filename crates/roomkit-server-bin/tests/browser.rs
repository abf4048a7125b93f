//! The web page, driven by two headless Chromium sessions through WebDriver (chromedriver),
//! against the real `roomkit-server --dev` binary on 127.0.0.1.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them). Set
//! `ROOMKIT_CHROMEDRIVER` / `ROOMKIT_CHROMIUM` to use other binaries. Without a chromedriver
//! the test fails, saying so. Screenshots land in `target/tmp/browser/`.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found: the browser test needs Chromium and its WebDriver. Install the Debian packages \
         `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver; .ci/run does this), \
         or point {env} at the binary.",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `roomkit-server --dev` on free ports; returns it and the page URL it prints.
fn start_server() -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomkit-server"))
        .args(["--dev", "--store", "memory", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start roomkit-server");
    let stdout = child.stdout.take().unwrap();
    let server = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("roomkit-server exited before printing its addresses").unwrap();
        if let Some(rest) = line.trim().strip_prefix("web page:") {
            break rest.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, url)
}

/// Starts chromedriver on a free port and waits until it answers.
async fn start_chromedriver() -> (Proc, String) {
    let driver = binary("ROOMKIT_CHROMEDRIVER", "/usr/bin/chromedriver");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let proc = Proc(child);
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start listening on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (proc, format!("http://127.0.0.1:{port}"))
}

/// A headless Chromium session with its own fresh profile: a `width`×`height` window, or with
/// `phone`, a phone-sized viewport (the window itself cannot be narrower than 500 pixels).
async fn browser(webdriver: &str, profile: &Path, width: u32, height: u32, phone: bool) -> Client {
    let chromium = binary("ROOMKIT_CHROMIUM", "/usr/bin/chromium");
    std::fs::create_dir_all(profile).unwrap();
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-dev-shm-usage".into(),
        "--hide-scrollbars".into(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut options = json!({ "binary": chromium.to_string_lossy(), "args": args });
    if phone {
        options["mobileEmulation"] = json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true } });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .unwrap_or_else(|e| panic!("starting a Chromium session through {webdriver}: {e}"))
}

/// Evaluates `expr` (a JavaScript expression) in the page.
async fn eval(c: &Client, expr: &str) -> Value {
    c.execute(&format!("return ({expr});"), vec![]).await.unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Waits until `expr` is truthy in the page.
async fn until(c: &Client, what: &str, expr: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = eval(c, &format!("Boolean({expr})")).await;
        if v == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let banner = eval(c, "document.getElementById('banner').innerText").await;
            let log = eval(c, "document.getElementById('messages').innerText").await;
            panic!("timed out waiting for {what} ({expr}); banner: {banner}; messages: {log}");
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

async fn visible(c: &Client, view: &str) {
    until(c, view, &format!("!document.getElementById('{view}').hidden")).await;
}

async fn fill(c: &Client, id: &str, text: &str) {
    let input = c.find(Locator::Id(id)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id)).await.unwrap().click().await.unwrap();
}

async fn sign_in(c: &Client, url: &str, account: &str) {
    c.goto(url).await.unwrap();
    until(c, "the page script", "document.documentElement.dataset.ready === 'true'").await;
    until(c, "the development hint", "!document.getElementById('dev-hint').hidden").await;
    fill(c, "account", account).await;
    click(c, "signin-btn").await;
    visible(c, "view-lobby").await;
}

/// JavaScript: whether a message whose text is exactly `text` is shown.
fn has_message(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages .msg-text')].some(e => e.textContent === {})",
        json!(text)
    )
}

fn has_notice(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages .notice')].some(e => e.textContent === {})",
        json!(text)
    )
}

async fn send(c: &Client, text: &str) {
    fill(c, "text", text).await;
    click(c, "send").await;
    until(c, "the sent message", &has_message(text)).await;
    until(c, "the cleared composer", "document.getElementById('text').value === ''").await;
}

async fn save_screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_the_browser() {
    let (_driver, webdriver) = start_chromedriver().await;
    let (_server, url) = start_server();
    let profiles =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profiles);

    // Alice on a desktop-sized window, Bob at phone width.
    let alice = browser(&webdriver, &profiles.join("alice"), 1100, 800, false).await;
    let bob = browser(&webdriver, &profiles.join("bob"), 390, 844, true).await;
    // Run the scenario as a task so that the browsers are closed even when it fails.
    let (a, b) = (alice.clone(), bob.clone());
    let outcome = tokio::spawn(async move { scenario(&a, &b, &url).await }).await;
    let _ = alice.close().await;
    let _ = bob.close().await;
    let _ = std::fs::remove_dir_all(&profiles);
    match outcome {
        Ok(result) => result.expect("scenario"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("{e}"),
    }
}

async fn scenario(alice: &Client, bob: &Client, url: &str) -> Result<(), String> {
    // Both sign in by picking a name: the page fetches a development token.
    sign_in(alice, url, "alice").await;
    // Bob follows a broken room link: he still reaches the lobby, told the link is bad.
    sign_in(bob, &format!("{url}#room=%E0%A4%A"), "bob").await;
    until(bob, "the bad link banner", "!document.getElementById('banner').hidden").await;
    let banner = eval(bob, "document.getElementById('banner').innerText").await;
    let banner = banner.as_str().unwrap_or_default();
    assert!(banner.contains("room link is malformed") && !banner.contains("URI malformed"), "{banner}");
    assert_eq!(eval(bob, "document.getElementById('join-uuid').value").await, "");
    assert_eq!(eval(bob, "location.hash").await, "");

    // A clear message for an error code: joining a room that does not exist.
    fill(bob, "join-uuid", "no-such-room").await;
    click(bob, "join-btn").await;
    until(bob, "the error banner", "!document.getElementById('banner').hidden").await;
    let banner = eval(bob, "document.getElementById('banner').innerText").await;
    let banner = banner.as_str().unwrap_or_default();
    assert!(banner.contains("There is no room with this id.") && banner.contains("2000"), "{banner}");
    save_screenshot(bob, "phone-lobby.png").await;

    // Alice creates a room with a chatroom (and joins it); Bob joins by id.
    fill(alice, "create-uuid", "browser-room").await;
    fill(alice, "create-name", "Browser test").await;
    assert_eq!(eval(alice, "document.getElementById('create-chatroom').checked").await, true);
    click(alice, "create-btn").await;
    visible(alice, "view-room").await;
    fill(bob, "join-uuid", "browser-room").await;
    click(bob, "join-btn").await;
    visible(bob, "view-room").await;
    until(bob, "the banner to clear", "document.getElementById('banner').hidden").await;
    until(alice, "bob's join notice", &has_notice("bob joined the room.")).await;
    until(alice, "the count with bob", &count_is("2 online · 0 chatting")).await;
    until(bob, "bob's count from the join answer", &count_is("2 online · 0 chatting")).await;

    // Both enter the chatroom; the member list shows who is in it.
    click(alice, "chat-toggle").await;
    until(
        alice,
        "alice in the chatroom",
        "document.getElementById('chat-toggle').textContent === 'Leave chatroom'",
    )
    .await;
    send(alice, "Welcome, this is the first message.").await;
    click(bob, "chat-toggle").await;
    // History on entering: Bob sees what was said before he came in.
    until(bob, "history", &has_message("Welcome, this is the first message.")).await;
    until(alice, "bob entering the chatroom", &has_notice("bob joined the chatroom.")).await;
    until(
        alice,
        "two members chatting",
        "document.querySelectorAll('#members .member.in-chat').length === 2",
    )
    .await;
    until(alice, "the count of two chatting", &count_is("2 online · 2 chatting")).await;
    until(bob, "bob counting himself in", &count_is("2 online · 2 chatting")).await;

    // A like is ephemeral: counted in the room's head, never a message in the list.
    click(bob, "like").await;
    until(alice, "bob's like", "document.getElementById('likes').textContent === '♥ 1'").await;
    until(bob, "his own like", "document.getElementById('likes').textContent === '♥ 1'").await;

    // They exchange messages.
    send(alice, "hello from alice").await;
    until(bob, "alice's message", &has_message("hello from alice")).await;
    send(bob, "hi alice").await;
    until(alice, "bob's message", &has_message("hi alice")).await;

    // A direct message: Bob picks Alice as the recipient.
    bob.execute(
        "const s = document.getElementById('to'); s.value = 'alice'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .map_err(|e| e.to_string())?;
    send(bob, "just for you").await;
    until(alice, "the direct message", &has_message("just for you")).await;
    until(alice, "the private label", "[...document.querySelectorAll('#messages .msg.direct .to')].some(e => e.textContent === '→ you (private)')").await;
    bob.execute("document.getElementById('to').value = '';", vec![]).await.map_err(|e| e.to_string())?;

    // Mallory joins calling herself "alice": her messages and her place in the member list
    // carry her account id beside the name, Alice's (whose name is her id) do not.
    let (mallory, in_room) = spoofer(url, "browser-room", "alice").await;
    in_room.chat_controller().send_broadcast_text_message("I am alice").await.map_err(|e| e.to_string())?;
    until(bob, "mallory's message", &has_message("I am alice")).await;
    let head = |text: &str, part: &str| {
        format!(
            "[...document.querySelectorAll('#messages .msg')].find(li => li.querySelector('.msg-text').textContent === {}).querySelector('.msg-head {part}')",
            json!(text)
        )
    };
    assert_eq!(eval(bob, &format!("{}.textContent", head("I am alice", ".from"))).await, "alice");
    assert_eq!(eval(bob, &format!("{}.textContent", head("I am alice", ".uuid"))).await, "mallory");
    assert_eq!(eval(bob, &format!("{} === null", head("hello from alice", ".uuid"))).await, true);
    let listed = "document.querySelector('#members .member[data-uuid=\"mallory\"] .uuid')";
    until(bob, "mallory's id in the member list", &format!("{listed} && {listed}.textContent === 'mallory'"))
        .await;
    mallory.close().await;
    until(alice, "mallory gone", &count_is("2 online · 2 chatting")).await;

    // Markup in a message is shown as text, never run.
    let script = "<script>alert(1)</script> <b>bold?</b> <img src=x onerror=alert(2)>";
    send(alice, script).await;
    until(bob, "the markup message", &has_message(script)).await;
    for c in [alice, bob] {
        assert_eq!(
            eval(c, "document.querySelectorAll('#messages script, #messages img, #messages b').length").await,
            0
        );
        assert!(c.get_alert_text().await.is_err(), "no alert may be open");
    }

    // Alice recalls a message: it disappears for both of them.
    let recall = "[...document.querySelectorAll('#messages .msg.mine')].find(li => li.querySelector('.msg-text').textContent === 'hello from alice').querySelector('button.recall')";
    alice.execute(&format!("{recall}.click();"), vec![]).await.map_err(|e| e.to_string())?;
    until(alice, "the recalled message to disappear", &format!("!({})", has_message("hello from alice")))
        .await;
    until(bob, "the recalled message to disappear", &format!("!({})", has_message("hello from alice"))).await;
    until(bob, "the recall note", &has_message("This message was recalled.")).await;
    assert_eq!(eval(alice, "document.getElementById('banner').hidden").await, true);

    // Bob leaves the chatroom; Alice sees the notice and the member list change.
    click(bob, "chat-toggle").await;
    until(
        bob,
        "bob out of the chatroom",
        "document.getElementById('chat-toggle').textContent === 'Join chatroom'",
    )
    .await;
    until(alice, "bob's leave notice", &has_notice("bob left the chatroom.")).await;
    until(alice, "one member chatting", "document.querySelectorAll('#members .member.in-chat').length === 1")
        .await;
    until(alice, "the count after bob left the chatroom", &count_is("2 online · 1 chatting")).await;
    until(bob, "bob counting himself out", &count_is("2 online · 1 chatting")).await;
    send(alice, "see you, bob").await;

    // Phone width: nothing sticks out sideways.
    assert_eq!(eval(bob, "window.innerWidth").await, 390);
    assert_eq!(eval(bob, "document.documentElement.scrollWidth <= window.innerWidth").await, true);

    save_screenshot(alice, "desktop.png").await;
    save_screenshot(bob, "phone.png").await;

    // A room past the join answer's page (50 members): 50 viewers join through the SDK; Bob
    // leaves and joins again, sees a first page and the exact count, and loads the rest.
    let viewers = viewers(url, "browser-room", 50).await;
    until(alice, "the count with the viewers", &count_is("52 online · 1 chatting")).await;
    click(bob, "leave-room").await;
    visible(bob, "view-lobby").await;
    until(alice, "the count without bob", &count_is("51 online · 1 chatting")).await;
    fill(bob, "join-uuid", "browser-room").await;
    click(bob, "join-btn").await;
    visible(bob, "view-room").await;
    until(bob, "the exact count", &count_is("52 online · 1 chatting")).await;
    let listed = "document.querySelectorAll('#members .member').length";
    assert_eq!(eval(bob, listed).await, 51, "the first page, the host and himself");
    until(bob, "the load-more button", "!document.getElementById('members-more').hidden").await;
    save_screenshot(bob, "phone-large-room.png").await;
    click(bob, "members-more").await;
    until(bob, "every member listed", &format!("{listed} === 52")).await;
    until(bob, "no more to load", "document.getElementById('members-more').hidden").await;
    for kit in viewers {
        kit.close().await;
    }
    until(alice, "the viewers gone", &count_is("2 online · 1 chatting")).await;
    Ok(())
}

/// JavaScript: whether the member panel's count reads `text`.
fn count_is(text: &str) -> String {
    format!("document.getElementById('member-count').textContent === {}", json!(text))
}

/// An SDK client, account `mallory`, in `room` and its chatroom under the display name `name`.
async fn spoofer(
    page_url: &str,
    room: &str,
    name: &str,
) -> (roomkit_client::RoomKit, roomkit_client::RoomContext) {
    let ws = page_url.trim_end_matches('/').replacen("http://", "ws://", 1) + "/v1";
    let kit = roomkit_client::RoomKit::connect(ws.as_str()).await.expect("connect mallory");
    kit.login("mallory", "dev-token").await.expect("log mallory in");
    let params = roomkit_client::JoinRoomParams {
        room_uuid: room.into(),
        user_name: name.into(),
        ..Default::default()
    };
    let ctx = kit.room_service().join_room(params, Default::default()).await.expect("mallory joins");
    ctx.chat_controller().join_chatroom().await.expect("mallory enters the chatroom");
    (kit, ctx)
}

/// `n` SDK clients in `room` (not in its chatroom), over the page's own WebSocket endpoint.
async fn viewers(page_url: &str, room: &str, n: usize) -> Vec<roomkit_client::RoomKit> {
    let ws = page_url.trim_end_matches('/').replacen("http://", "ws://", 1) + "/v1";
    let mut kits = Vec::new();
    for i in 0..n {
        let kit = roomkit_client::RoomKit::connect(ws.as_str()).await.expect("connect a viewer");
        kit.login(&format!("viewer-{i:02}"), "dev-token").await.expect("log a viewer in");
        let params = roomkit_client::JoinRoomParams {
            room_uuid: room.into(),
            user_name: format!("Viewer {i:02}"),
            ..Default::default()
        };
        kit.room_service().join_room(params, Default::default()).await.expect("a viewer joins");
        kits.push(kit);
    }
    kits
}
