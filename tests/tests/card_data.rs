//! Card data the switch must never keep: track data, PIN blocks, and free text on messages
//! that carry no order reference. Requests carrying them go through a real switch with the
//! default durability, and every file of its state directory is searched for their bytes,
//! while it runs (the journal) and after it stopped (the snapshot).

use std::path::Path;

use tests::{luhn_pan, Req, TestSwitch};

const MERCHANT: &str = "MERCHANT0000001";

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read file");
            found.push((path.display().to_string(), bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no file under `state` holds any of `secrets`, and that one holds `kept` (so
/// that the search can see a stored string at all).
fn assert_not_stored(state: &Path, secrets: &[(&str, Vec<u8>)], kept: &[u8], when: &str) {
    let files = files(state);
    assert!(!files.is_empty(), "{when}: no state files");
    for (name, bytes) in &files {
        for (what, secret) in secrets {
            assert!(!contains(bytes, secret), "{when}: {what} stored in {name}");
        }
    }
    assert!(
        files.iter().any(|(_, bytes)| contains(bytes, kept)),
        "{when}: the order reference stored nowhere: the search cannot see strings"
    );
}

#[tokio::test]
async fn track_data_pin_blocks_and_stray_field_48_never_reach_the_disk() {
    let pan = luhn_pan("411111000000001");
    let accounts = format!(
        "pan,expiry,status,currency,balance,daily_limit\n{pan},3012,active,840,1000.00,500.00\n"
    );
    let orders = format!(
        "order_id,merchant_id,amount,currency,status\nORD-KEPT-1,{MERCHANT},10.00,840,open\n"
    );
    let sw = TestSwitch::start_with(&accounts, &orders, |c| {
        c.durability = switch::config::Durability::Fsync;
    })
    .await;
    let mut client = sw.client().await;

    let track2 = format!("{pan}=30121017766554433");
    let track1 = format!("B{pan}^CARD/TEST^3012101000998877");
    let purchase = Req::financial(&pan, "000000", 1000, 1)
        .set(35, &track2)
        .set(45, &track1)
        .set(52, "A1B2C3D4E5F60718");
    assert_eq!(client.call("0200", &purchase.list()).await.code(), "00");
    // On a reversal DE 48 is no order reference: whatever an acquirer puts there (a CVC2 in
    // some networks' conventions) is not kept.
    let reversal = Req::financial(&pan, "000000", 1000, 2)
        .set(90, &purchase.field90("0200"))
        .set(48, "CVC2=493X");
    assert_eq!(client.call("0400", &reversal.list()).await.code(), "00");
    let order = Req::financial(&pan, "000000", 1000, 3)
        .set(42, MERCHANT)
        .set(48, "ORD-KEPT-1");
    assert_eq!(client.call("0200", &order.list()).await.code(), "00");

    let secrets = [
        ("track 2", b"7766554433".to_vec()),
        ("track 1", b"998877".to_vec()),
        ("track 1 name", b"CARD/TEST".to_vec()),
        (
            "PIN block",
            vec![0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x07, 0x18],
        ),
        ("PIN block as text", b"A1B2C3D4".to_vec()),
        ("DE 48 of a reversal", b"CVC2=493X".to_vec()),
    ];
    let state = sw.dir.path().join("state");
    // Answered under `fsync`: the journal holds these requests now.
    assert_not_stored(&state, &secrets, b"ORD-KEPT-1", "running");
    let TestSwitch { running, dir } = sw;
    running.shutdown().await;
    assert_not_stored(
        &dir.path().join("state"),
        &secrets,
        b"ORD-KEPT-1",
        "stopped",
    );
}
