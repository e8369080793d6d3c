//! A mailbox's folders on a temporary directory: UIDs given once and kept, flags in names,
//! folder operations, and what other sessions and tools see.

use std::fs;
use std::path::PathBuf;

use super::lock::LOCK_FILE;
use super::*;

fn mailstore() -> (tempfile::TempDir, Mailstore) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("box");
    crate::maildir::create(&dir).unwrap();
    (root, Mailstore::new(dir, "mail.example.jp"))
}

fn deliver(store: &Mailstore, text: &str) -> PathBuf {
    crate::maildir::deliver(store.root(), "mail.example.jp", text.as_bytes()).unwrap()
}

#[test]
fn flags_round_trip_through_names() {
    let f = Flags::SEEN.union(Flags::FLAGGED);
    assert_eq!(
        f.apply_to_info("Pa"),
        "FPS",
        "keyword letters are flags too"
    );
    assert_eq!(Flags::from_info("FPS"), f);
    let b = Flags::keyword(1).unwrap();
    assert_eq!(f.union(b).apply_to_info("P"), "FPSb");
    assert_eq!(Flags::from_info("FPSb"), f.union(b));
    assert_eq!(Flags::NONE.apply_to_info("ST"), "");
    assert_eq!(FlagOp::Remove.apply(f, Flags::SEEN), Flags::FLAGGED);
}

#[test]
fn names_map_into_the_maildir_only() {
    assert_eq!(check_name("inbox").unwrap(), "INBOX");
    assert_eq!(check_name("Inbox.Sub").unwrap(), "INBOX.Sub");
    assert_eq!(check_name("Archive.2024").unwrap(), "Archive.2024");
    for bad in ["", ".x", "x.", "a..b", "a/b", "..", "x\ny"] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn uids_are_given_once_and_kept() {
    let (_root, store) = mailstore();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    deliver(&store, "Subject: 2\r\n\r\ntwo\r\n");
    let mut a = Folder::open(&store, "INBOX", true).unwrap();
    let uids: Vec<u32> = a.entries().iter().map(|e| e.uid).collect();
    assert_eq!(uids, [1, 2]);
    assert!(
        a.entries()
            .iter()
            .all(|e| e.recent && e.file.starts_with("cur/"))
    );
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(store.root().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(UIDLIST), 0o600, "private like the rest of the store");
    assert_eq!(mode(LOCK_FILE), 0o600);
    // Another session sees the same UIDs, none of them recent for it.
    let b = Folder::open(&store, "INBOX", true).unwrap();
    assert_eq!(
        b.entries().iter().map(|e| e.uid).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(b.entries().iter().all(|e| !e.recent));
    assert_eq!(a.uidvalidity(), b.uidvalidity());
    // New mail gets the next UID, in whichever session sees it first.
    deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
    let c = Folder::open(&store, "INBOX", false).unwrap();
    assert_eq!(c.entries().last().map(|e| e.uid), Some(3));
    a.scan(true).unwrap();
    assert_eq!(a.entries().last().map(|e| e.uid), Some(3));
    assert_eq!(a.uidnext(), 4);
}

#[test]
fn new_messages_are_numbered_in_arrival_order() {
    let (_root, store) = mailstore();
    // Older names, unpadded: as text, M1000 sorts before M999.
    for name in ["1700000000.M1000P1I1.h,S=3", "1700000000.M999P1I0.h,S=3"] {
        fs::write(store.root().join("new").join(name), "one").unwrap();
    }
    deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
    let folder = Folder::open(&store, "INBOX", true).unwrap();
    let order: Vec<(u32, &str)> = folder
        .entries()
        .iter()
        .map(|e| (e.uid, e.unique().split(".h").next().unwrap_or("")))
        .collect();
    assert_eq!(order[0], (1, "1700000000.M999P1I0"));
    assert_eq!(order[1], (2, "1700000000.M1000P1I1"));
    assert_eq!(order[2].0, 3, "delivered now, after both");
}

#[test]
fn store_expunge_and_the_next_uid() {
    let (_root, store) = mailstore();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    deliver(&store, "Subject: 2\r\n\r\ntwo\r\n");
    let mut a = Folder::open(&store, "INBOX", true).unwrap();
    let mut b = Folder::open(&store, "INBOX", true).unwrap();
    let changed = a
        .store(&[2], FlagOp::Add, Flags::DELETED.union(Flags::SEEN), &[])
        .unwrap();
    assert_eq!(changed, [(2, Flags::DELETED.union(Flags::SEEN))]);
    // b still has the old name; it follows the rename.
    assert!(b.read(2).unwrap().is_some());
    b.store(&[2], FlagOp::Add, Flags::FLAGGED, &[]).unwrap();
    a.scan(true).unwrap();
    assert_eq!(
        a.entries()[1].flags,
        Flags::DELETED.union(Flags::SEEN).union(Flags::FLAGGED)
    );
    assert_eq!(
        a.expunge(&[1, 2]).unwrap(),
        [2],
        "only \\Deleted messages go"
    );
    b.scan(true).unwrap();
    assert_eq!(b.entries().len(), 1);
    assert_eq!(b.read(2).unwrap(), None);
    // The UID of an expunged message is never given again.
    deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
    b.scan(true).unwrap();
    assert_eq!(b.entries().last().map(|e| e.uid), Some(3));
}

#[test]
fn folders_append_copy_move_rename_delete() {
    let (_root, store) = mailstore();
    store.create("Archive.2024").unwrap();
    assert_eq!(store.list().unwrap(), ["INBOX", "Archive", "Archive.2024"]);
    assert!(
        matches!(store.create("archive.2024"), Ok(())),
        "names are case-sensitive"
    );
    assert!(matches!(
        store.create("Archive"),
        Err(FolderError::AlreadyExists(_))
    ));
    assert!(store.root().join(".Archive.2024/maildirfolder").exists());

    let mut inbox = Folder::open(&store, "INBOX", true).unwrap();
    let uid = inbox
        .append(
            b"Subject: a\r\n\r\nx\r\n",
            Flags::SEEN,
            &[],
            Some(1_000_000_000),
        )
        .unwrap();
    assert_eq!(uid, 1);
    assert_eq!(inbox.entries()[0].internal_date, 1_000_000_000);
    let mut archive = Folder::open(&store, "Archive", true).unwrap();
    let pairs = inbox.copy_to(&[1], &mut archive, false).unwrap();
    assert_eq!(pairs, [(1, 1)]);
    let pairs = inbox.copy_to(&[1], &mut archive, true).unwrap();
    assert_eq!(pairs, [(1, 2)]);
    assert!(inbox.entries().is_empty());
    let status = store.status("Archive").unwrap();
    assert_eq!((status.messages, status.unseen, status.uidnext), (2, 0, 3));
    assert_eq!(archive.copy_here(&[2], false).unwrap(), [(2, 3)]);

    store.rename("Archive", "Old").unwrap();
    assert_eq!(
        store.list().unwrap(),
        ["INBOX", "Old", "Old.2024", "archive", "archive.2024"]
    );
    let old = Folder::open(&store, "Old", false).unwrap();
    assert_eq!(
        old.entries().len(),
        3,
        "messages and UIDs go with the folder"
    );
    assert_eq!(old.uidvalidity(), archive.uidvalidity());
    store.delete("Old").unwrap();
    assert_eq!(
        store.list().unwrap(),
        ["INBOX", "Old.2024", "archive", "archive.2024"]
    );
    assert!(matches!(
        store.delete("INBOX"),
        Err(FolderError::Refused(_))
    ));
    assert!(matches!(
        Folder::open(&store, "Old", false),
        Err(FolderError::NoSuchFolder(_))
    ));

    // A folder made again gets a new UIDVALIDITY.
    store.create("Old").unwrap();
    assert_ne!(
        Folder::open(&store, "Old", false).unwrap().uidvalidity(),
        old.uidvalidity()
    );
}

#[test]
fn renaming_inbox_moves_its_messages() {
    let (_root, store) = mailstore();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    store.rename("INBOX", "Saved").unwrap();
    assert_eq!(
        Folder::open(&store, "INBOX", false)
            .unwrap()
            .entries()
            .len(),
        0
    );
    assert_eq!(
        Folder::open(&store, "Saved", false)
            .unwrap()
            .entries()
            .len(),
        1
    );
}

#[test]
fn subscriptions_and_status_leave_new_alone() {
    let (_root, store) = mailstore();
    store.set_subscribed("Sent", true).unwrap();
    store.set_subscribed("inbox", true).unwrap();
    assert_eq!(store.subscriptions().unwrap(), ["INBOX", "Sent"]);
    store.set_subscribed("Sent", false).unwrap();
    assert_eq!(store.subscriptions().unwrap(), ["INBOX"]);
    let path = deliver(&store, "Subject: 1\r\n\r\none\r\n");
    let status = store.status("INBOX").unwrap();
    assert_eq!((status.messages, status.recent, status.unseen), (1, 1, 1));
    assert!(path.exists(), "STATUS does not move new/ to cur/");
}

#[test]
fn a_lost_uidlist_starts_a_new_uidvalidity() {
    let (_root, store) = mailstore();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    let a = Folder::open(&store, "INBOX", true).unwrap();
    fs::write(store.root().join(UIDLIST), "garbage").unwrap();
    let b = Folder::open(&store, "INBOX", true).unwrap();
    assert_ne!(a.uidvalidity(), b.uidvalidity());
    assert_eq!(b.entries().len(), 1);
}

#[test]
fn an_empty_folder_keeps_its_uidvalidity() {
    let (_root, store) = mailstore();
    store.create("Fresh").unwrap();
    let first = Folder::open(&store, "INBOX", true).unwrap().uidvalidity();
    let status = store.status("INBOX").unwrap().uidvalidity;
    let again = Folder::open(&store, "INBOX", false).unwrap().uidvalidity();
    assert_eq!((status, again), (first, first), "a never-used INBOX");
    let fresh = store.status("Fresh").unwrap().uidvalidity;
    let selected = Folder::open(&store, "Fresh", true).unwrap().uidvalidity();
    assert_eq!(selected, fresh, "a never-used folder");
    // COPYUID names the target's UIDVALIDITY; a later SELECT must agree.
    store.create("Target").unwrap();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    let mut inbox = Folder::open(&store, "INBOX", true).unwrap();
    let mut target = Folder::open(&store, "Target", false).unwrap();
    let uids: Vec<u32> = inbox.entries().iter().map(|e| e.uid).collect();
    inbox.copy_to(&uids, &mut target, false).unwrap();
    let told = target.uidvalidity();
    assert_eq!(
        Folder::open(&store, "Target", true).unwrap().uidvalidity(),
        told
    );
    assert_eq!(inbox.uidvalidity(), first, "INBOX kept its value");
}

#[test]
fn keywords_are_kept_by_name_and_survive_reopening() {
    let (_root, store) = mailstore();
    store.create("Other").unwrap();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    deliver(&store, "Subject: 2\r\n\r\ntwo\r\n");
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut inbox = Folder::open(&store, "INBOX", true).unwrap();
    let changed = inbox
        .store(
            &[1, 2],
            FlagOp::Add,
            Flags::SEEN,
            &names(&["$hello", "$world"]),
        )
        .unwrap();
    assert_eq!(inbox.keywords(), ["$hello", "$world"]);
    let both = Flags::keyword(0).unwrap().union(Flags::keyword(1).unwrap());
    assert_eq!(
        changed,
        [(1, Flags::SEEN.union(both)), (2, Flags::SEEN.union(both))]
    );
    inbox
        .store(&[2], FlagOp::Remove, Flags::NONE, &names(&["$HELLO"]))
        .unwrap();
    assert_eq!(
        fs::read_to_string(store.root().join(KEYWORDS)).unwrap(),
        "0 $hello\n1 $world\n"
    );
    // Another session, and a later one, see them from the names and the table.
    let again = Folder::open(&store, "INBOX", false).unwrap();
    assert_eq!(again.keywords(), ["$hello", "$world"]);
    let flags: Vec<Flags> = again.entries().iter().map(|e| e.flags).collect();
    assert_eq!(
        flags,
        [
            Flags::SEEN.union(both),
            Flags::SEEN.union(Flags::keyword(1).unwrap())
        ]
    );
    // A copy keeps them by name, whatever letter they get in the target.
    let mut other = Folder::open(&store, "Other", false).unwrap();
    other
        .append(
            b"Subject: x\r\n\r\nx\r\n",
            Flags::NONE,
            &names(&["$world"]),
            None,
        )
        .unwrap();
    inbox.copy_to(&[1], &mut other, false).unwrap();
    let other = Folder::open(&store, "Other", false).unwrap();
    assert_eq!(other.keywords(), ["$world", "$hello"]);
    assert_eq!(
        other.entries().last().unwrap().flags,
        Flags::SEEN.union(both),
        "$hello is b and $world a there"
    );
    // A full table refuses a 27th name and changes nothing.
    let many: Vec<String> = (0..24).map(|i| format!("k{i}")).collect();
    inbox.store(&[1], FlagOp::Add, Flags::NONE, &many).unwrap();
    let before = inbox.entries().to_vec();
    assert!(matches!(
        inbox.store(&[1, 2], FlagOp::Add, Flags::FLAGGED, &names(&["one-more"])),
        Err(FolderError::Refused(_))
    ));
    assert_eq!(inbox.entries(), before.as_slice());
}

#[test]
fn recent_goes_to_the_first_select_whatever_brought_the_message() {
    let (_root, store) = mailstore();
    store.create("Other").unwrap();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    deliver(&store, "Subject: 2\r\n\r\ntwo\r\n");
    let recent = |f: &Folder| f.entries().iter().filter(|e| e.recent).count();
    // EXAMINE looks without taking.
    let examined = Folder::open(&store, "INBOX", false).unwrap();
    assert_eq!(recent(&examined), 2);
    let mut inbox = Folder::open(&store, "INBOX", true).unwrap();
    assert_eq!(recent(&inbox), 2, "the first SELECT");
    assert_eq!(recent(&Folder::open(&store, "INBOX", true).unwrap()), 0);
    assert_eq!(store.status("INBOX").unwrap().recent, 0);
    // APPEND and COPY into a folder nobody has selected: \Recent for its first SELECT.
    let mut other = Folder::open(&store, "Other", false).unwrap();
    other
        .append(b"Subject: a\r\n\r\nx\r\n", Flags::NONE, &[], None)
        .unwrap();
    inbox.copy_to(&[1], &mut other, false).unwrap();
    assert_eq!(store.status("Other").unwrap().recent, 2);
    let mut selected = Folder::open(&store, "Other", true).unwrap();
    assert_eq!(recent(&selected), 2);
    assert_eq!(store.status("Other").unwrap().recent, 0);
    // Into the selected folder: \Recent there, and for no later SELECT.
    selected.copy_here(&[1], false).unwrap();
    selected
        .append(b"Subject: b\r\n\r\ny\r\n", Flags::NONE, &[], None)
        .unwrap();
    assert_eq!(recent(&selected), 4);
    inbox.copy_to(&[2], &mut selected, false).unwrap();
    assert_eq!(recent(&selected), 5);
    assert_eq!(store.status("Other").unwrap().recent, 0);
    assert_eq!(recent(&Folder::open(&store, "Other", true).unwrap()), 0);
    // A delivery seen by a re-scan of the selected INBOX is its alone.
    deliver(&store, "Subject: 3\r\n\r\nthree\r\n");
    inbox.scan(true).unwrap();
    assert_eq!(recent(&inbox), 3);
    assert_eq!(store.status("INBOX").unwrap().recent, 0);
}

#[test]
fn an_expunge_by_a_stale_session_keeps_what_others_added() {
    let (_root, store) = mailstore();
    deliver(&store, "Subject: 1\r\n\r\none\r\n");
    let mut a = Folder::open(&store, "INBOX", true).unwrap();
    let mut b = Folder::open(&store, "INBOX", true).unwrap();
    // `a` appends two and expunges the first; `b` has not scanned since, and expunges too.
    let gone = a
        .append(b"Subject: a\r\n\r\nx\r\n", Flags::DELETED, &[], None)
        .unwrap();
    let kept = a
        .append(b"Subject: b\r\n\r\ny\r\n", Flags::NONE, &[], None)
        .unwrap();
    a.expunge(&[gone]).unwrap();
    b.store(&[1], FlagOp::Add, Flags::DELETED, &[]).unwrap();
    b.expunge(&[1]).unwrap();
    // A third session must see the kept message under the UID its APPEND was given, and a
    // UID once given is never given again.
    let c = Folder::open(&store, "INBOX", false).unwrap();
    let uids: Vec<u32> = c.entries().iter().map(|e| e.uid).collect();
    assert_eq!(uids, [kept], "the UID APPENDUID told");
    assert!(c.uidnext() > kept);
}
