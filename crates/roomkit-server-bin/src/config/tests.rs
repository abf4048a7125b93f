//! Resolving the configuration: defaults, file, environment and flags.
use super::*;

#[test]
fn flags_override_the_file_and_defaults_fill_the_rest() {
    let dir = std::env::temp_dir().join(format!("roomkit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomkit.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9000\"\ntoken_secret = \"s\"\n[limits]\nmax_message_bytes = 100\nshards = 3\n",
    )
    .unwrap();
    let mut args = ServeArgs { config: Some(path), ..Default::default() };
    args.limits.shards = Some(5);
    let s = Settings::resolve(args).unwrap();
    assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(s.admin_listen, "127.0.0.1:7701".parse().unwrap());
    assert_eq!(s.server.core.max_message_bytes, 100);
    assert_eq!(s.server.shards, 5);
    assert_eq!(s.ws.max_frame_bytes, 64 * 1024);
    assert_eq!(s.server.high_watermark(), 3072, "three quarters of the default queue");
    assert_eq!(s.server.send_queue_bytes, 4 << 20);
    assert_eq!((s.server.reads_in_flight, s.server.core.history_scan_limit), (8, 1000));
    assert_eq!(s.server.commits_in_flight, 4);
    assert_eq!((s.checkpoint_interval.as_millis(), s.checkpoint_journal_bytes), (1000, 4 << 20));
}

#[test]
fn the_high_watermark_comes_from_the_file_and_stays_within_the_queue() {
    let dir = std::env::temp_dir().join(format!("roomkit-config-hwm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomkit.toml");
    std::fs::write(
        &path,
        "dev = true\n[limits]\nsend_queue_frames = 100\nsend_queue_high_watermark = 60\nsend_queue_bytes = 65536\n\
         reads_in_flight = 2\nhistory_scan_limit = 500\ncommits_in_flight = 0\n\
         checkpoint_interval_ms = 250\ncheckpoint_journal_bytes = 65536\n",
    )
    .unwrap();
    let s = Settings::resolve(ServeArgs { config: Some(path.clone()), ..Default::default() }).unwrap();
    assert_eq!((s.server.high_watermark(), s.server.send_queue_bytes), (60, 65536));
    assert_eq!((s.server.reads_in_flight, s.server.core.history_scan_limit), (2, 500));
    assert_eq!(s.server.commits_in_flight, 1, "0 counts as one commit in flight");
    assert_eq!((s.checkpoint_interval.as_millis(), s.checkpoint_journal_bytes), (250, 65536));
    let mut args = ServeArgs { config: Some(path), ..Default::default() };
    args.limits.send_queue_high_watermark = Some(500);
    assert_eq!(Settings::resolve(args).unwrap().server.high_watermark(), 100);
}

#[test]
fn a_send_queue_of_zero_bytes_is_refused_at_startup() {
    let mut args = ServeArgs { dev: true, ..Default::default() };
    args.limits.send_queue_bytes = Some(0);
    let Err(e) = Settings::resolve(args) else { panic!("send_queue_bytes 0 was accepted") };
    assert!(e.contains("send_queue_bytes must be at least 1"), "{e}");
}

#[test]
fn the_large_room_rules_are_settings() {
    let dir = std::env::temp_dir().join(format!("roomkit-config-large-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomkit.toml");
    std::fs::write(
        &path,
        "dev = true\n[limits]\njoin_member_page = 10\npresence_per_member_max = 100\npresence_digest_ms = 250\n\
         presence_digest_names = 5\npresence_count_only_min = 5000\npresence_hysteresis_percent = 10\n\
         member_message_rate = 5\nmember_message_burst = 6\nchatroom_message_rate = 50\n",
    )
    .unwrap();
    let mut args = ServeArgs { config: Some(path), ..Default::default() };
    args.limits.chatroom_message_burst = Some(70);
    let c = Settings::resolve(args).unwrap().server.core;
    assert_eq!(
        (c.join_member_page, c.presence_per_member_max, c.presence_digest_ms, c.presence_digest_names),
        (10, 100, 250, 5)
    );
    assert_eq!((c.presence_count_only_min, c.presence_hysteresis_percent), (5000, 10));
    assert_eq!((c.member_message_rate.per_second, c.member_message_rate.burst), (5, 6));
    assert_eq!((c.chatroom_message_rate.per_second, c.chatroom_message_rate.burst), (50, 70));
    let d = Settings::resolve(ServeArgs { dev: true, ..Default::default() }).unwrap().server.core;
    assert_eq!(
        (d.join_member_page, d.presence_per_member_max, d.member_message_rate.per_second),
        (50, 500, 20)
    );
}

#[test]
fn refuses_to_start_without_a_secret_unless_in_development_mode() {
    assert!(Settings::resolve(ServeArgs::default()).unwrap_err().contains("--token-secret"));
    let dev = Settings::resolve(ServeArgs { dev: true, ..Default::default() }).unwrap();
    assert_eq!(dev.token_secret.as_deref(), Some(DEV_TOKEN_SECRET));
}

#[test]
fn unknown_file_keys_are_errors() {
    let dir = std::env::temp_dir().join(format!("roomkit-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomkit.toml");
    std::fs::write(&path, "lissten = \"x\"\n").unwrap();
    assert!(read_file(Some(&path)).unwrap_err().contains("lissten"));
}
