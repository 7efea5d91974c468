//! Durability over real restarts of an in-process switch (issue 4): the journal and snapshots
//! under `<data_dir>/state/`, idempotency and balances across a clean restart, across a crash
//! image (the data directory copied while the switch runs, as a kill -9 would leave it), and
//! start-up on a torn or damaged journal.

use std::path::{Path, PathBuf};

use tests::{luhn_pan, Client, Req};

const CARDS: usize = 4;
/// Every card's opening balance, in cents.
const OPENING: i64 = 100_000;

fn card(i: usize) -> String {
    luhn_pan(&format!("4111110000001{i:02}"))
}

fn accounts_csv(balance: &str) -> String {
    let mut csv = String::from("pan,expiry,status,currency,balance,daily_limit\n");
    for i in 0..CARDS {
        csv.push_str(&format!(
            "{},3012,active,840,{balance},900000.00\n",
            card(i)
        ));
    }
    csv
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("accounts.csv"), accounts_csv("1000.00")).expect("accounts");
    std::fs::write(
        dir.path().join("orders.csv"),
        "order_id,merchant_id,amount,currency,status\n",
    )
    .expect("orders");
    dir
}

/// Starts a switch on `dir`; the error as its full text.
async fn start(dir: &Path) -> Result<switch::Running, String> {
    start_with(dir, Vec::new()).await
}

/// A BIN rule declining every test card with 57.
fn decline_all() -> Vec<switch::config::BinRule> {
    vec![switch::config::BinRule {
        low: "411111".into(),
        high: "411111".into(),
        action: switch::config::BinRuleAction::Decline,
        code: Some("57".into()),
    }]
}

async fn start_with(
    dir: &Path,
    bins: Vec<switch::config::BinRule>,
) -> Result<switch::Running, String> {
    switch::start(switch::Config {
        bins,
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_owned(),
        shards: 4,
        durability: switch::config::Durability::Fsync,
        log: "warn".into(),
        ..switch::Config::default()
    })
    .await
    .map_err(|e| format!("{e:#}"))
}

fn purchase(card: usize, amount: u64, stan: u32) -> Req {
    Req::financial(&card_pan(card), "000000", amount, stan)
}

fn card_pan(i: usize) -> String {
    card(i)
}

/// Available balance of a card from a balance inquiry's DE 54, in cents.
async fn balance(client: &mut Client, card: usize, stan: u32) -> i64 {
    let r = client
        .call(
            "0100",
            &Req::financial(&card_pan(card), "310000", 0, stan)
                .set(41, "TERMBAL1")
                .without(4)
                .list(),
        )
        .await;
    assert_eq!(r.code(), "00", "balance inquiry");
    let de54 = r.get(54).expect("DE 54");
    let amount: i64 = de54[de54.len() - 12..].parse().expect("amount");
    if de54.as_bytes()[7] == b'D' {
        -amount
    } else {
        amount
    }
}

/// One answered purchase: the request and its (DE 39, DE 38).
type Answered = (Req, String, Option<String>);

/// Purchases on every card; returns them with their answers.
async fn purchases(client: &mut Client, stan0: u32, count: u32) -> Vec<Answered> {
    let mut done = Vec::new();
    for k in 0..count {
        let req = purchase((k as usize) % CARDS, 1_000 + u64::from(k) * 7, stan0 + k);
        let r = client.call("0200", &req.list()).await;
        assert_eq!(r.mti, "0210");
        done.push((req, r.code().to_owned(), r.get(38).map(str::to_owned)));
    }
    done
}

/// Retransmits every answered purchase (as a repeat, 0201) and checks the same answer comes
/// back, then checks each card's balance is the opening one minus its approvals, once.
async fn check(client: &mut Client, answered: &[Answered], stan: u32) {
    for (req, code, approval) in answered {
        let r = client.call("0201", &req.list()).await;
        assert_eq!(
            (r.code(), r.get(38)),
            (code.as_str(), approval.as_deref()),
            "a retransmission after the restart gets the original answer"
        );
    }
    for c in 0..CARDS {
        let debited: i64 = answered
            .iter()
            .filter(|(req, code, _)| code == "00" && req.fields[&2] == card_pan(c))
            .map(|(req, _, _)| req.fields[&4].parse::<i64>().expect("amount"))
            .sum();
        assert_eq!(
            balance(client, c, stan + c as u32).await,
            OPENING - debited,
            "card {c}: each approval applied exactly once"
        );
    }
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for shard in std::fs::read_dir(dir.join("state")).expect("state dir") {
        let shard = shard.expect("entry").path();
        if !shard.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&shard).expect("shard dir") {
            let f = f.expect("entry").path();
            if f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            {
                found.push(f);
            }
        }
    }
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_clean_restart_keeps_answers_and_balances_and_never_rereads_the_csvs() {
    let dir = data_dir();
    let sw = start(dir.path()).await.expect("first start");
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    let mut answered = purchases(&mut client, 1, 12).await;
    assert!(answered.iter().all(|(_, code, _)| code == "00"));
    drop(client);
    sw.shutdown().await;

    // The shutdown wrote generation 1 and removed generation 0; files are private.
    let snapshots = files(dir.path(), "snapshot-");
    assert_eq!(snapshots.len(), 4, "{snapshots:?}");
    assert!(snapshots.iter().all(|p| p
        .to_string_lossy()
        .ends_with("snapshot-00000000000000000001")));
    for p in files(dir.path(), "") {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    // Changed CSVs are not read again: the state directory is the truth now.
    std::fs::write(dir.path().join("accounts.csv"), accounts_csv("1.00")).expect("rewrite");

    let sw = start(dir.path()).await.expect("second start");
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    check(&mut client, &answered, 500).await;
    // New approvals get new approval codes (the counter survived the restart).
    let more = purchases(&mut client, 100, 4).await;
    for (_, code, approval) in &more {
        assert_eq!(code, "00");
        assert!(
            answered.iter().all(|(_, _, a)| a != approval),
            "approval code {approval:?} repeated after the restart"
        );
    }
    answered.extend(more);
    drop(client);
    sw.shutdown().await;

    let sw = start(dir.path()).await.expect("third start");
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    check(&mut client, &answered, 600).await;
    drop(client);
    sw.shutdown().await;
    let boot = std::fs::read_to_string(dir.path().join("state/boot")).expect("boot");
    assert_eq!(boot.trim(), "3");
}

#[tokio::test]
async fn a_crash_image_recovers_from_the_journal_and_refuses_damage() {
    let dir = data_dir();
    let sw = start(dir.path()).await.expect("first start");
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    let answered = purchases(&mut client, 1, 16).await;
    assert!(answered.iter().all(|(_, code, _)| code == "00"));
    // Every answer left after its batch was fsynced: the directory as it is now is what a
    // kill -9 would leave. Copy it while the switch still runs.
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), crashed.path());
    drop(client);
    sw.shutdown().await;

    // The journal of generation 0 holds the decisions (no shutdown snapshot in the copy).
    let journals = files(crashed.path(), "journal-");
    assert!(journals.iter().all(|p| p
        .to_string_lossy()
        .ends_with("journal-00000000000000000000.log")));
    let biggest = journals
        .iter()
        .max_by_key(|p| std::fs::metadata(p).expect("meta").len())
        .expect("a journal")
        .clone();
    let pristine = std::fs::read(&biggest).expect("read");
    assert!(pristine.len() > 100, "records were journaled");

    // Damage in the middle: start-up fails naming the file and the offset.
    let mut damaged = pristine.clone();
    damaged[12] ^= 0x40;
    std::fs::write(&biggest, &damaged).expect("damage");
    let e = start(crashed.path())
        .await
        .expect_err("damaged journal refused");
    let text = e;
    assert!(
        text.contains(&biggest.display().to_string()) && text.contains("offset 0"),
        "{text}"
    );

    // A torn tail (half a record appended) is cut off and the switch starts.
    let mut torn = pristine.clone();
    torn.extend_from_slice(&pristine[..pristine.len().min(20)]);
    std::fs::write(&biggest, &torn).expect("tear");
    let sw = start(crashed.path()).await.expect("torn tail tolerated");
    let now = std::fs::read(&biggest).expect("read");
    assert!(
        now.starts_with(&pristine) && now != torn,
        "the torn record was cut off, the good ones kept"
    );
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    check(&mut client, &answered, 700).await;
    drop(client);
    sw.shutdown().await;
}

#[tokio::test]
async fn changed_bin_rules_never_re_decide_the_journal() {
    let dir = data_dir();
    let sw = start(dir.path()).await.expect("first start");
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    let mut answered = purchases(&mut client, 1, 8).await;
    assert!(answered.iter().all(|(_, code, _)| code == "00"));
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), crashed.path());
    drop(client);
    sw.shutdown().await;

    // After a crash, a rule declining every card must not re-decide the journaled approvals:
    // the replay runs under the stored settings, which stay in effect for this run.
    let sw = start_with(crashed.path(), decline_all())
        .await
        .expect("start after the crash");
    let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
    check(&mut client, &answered, 500).await;
    let more = purchases(&mut client, 100, 1).await;
    assert_eq!(more[0].1, "00", "stored settings until a clean restart");
    answered.extend(more);
    drop(client);
    sw.shutdown().await;

    // After the clean shutdown the new rule takes effect; earlier answers stand.
    for d in [crashed.path(), dir.path()] {
        let sw = start_with(d, decline_all()).await.expect("clean restart");
        let mut client = Client::connect(sw.iso_addr, "iso87-binary").await;
        let declined = purchases(&mut client, 200, 1).await;
        assert_eq!(declined[0].1, "57", "the new BIN rule applies");
        if d == crashed.path() {
            // (Balance inquiries are declined by the rule too: compare answers only.)
            for (req, code, approval) in &answered {
                let r = client.call("0201", &req.list()).await;
                assert_eq!((r.code(), r.get(38)), (code.as_str(), approval.as_deref()));
            }
        }
        drop(client);
        sw.shutdown().await;
    }
}
