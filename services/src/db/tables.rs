//! Every column family of the store, with the record types of the domains that own them: the
//! storage layer (`hemicycle_core::db`) opens this set and knows none of them.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId};

use super::{
    codec::{Be64, Json},
    Table, TableSet, DB,
};
use crate::{
    ephemeral::{presence::PresenceRecord, receipts::Receipt, to_device::ToDeviceMessage},
    federation::keys::RemoteKeySet,
    keys::{backup::BackupVersion, FallbackKey},
    media::{antivirus::Verdict, MediaRecord, ThumbnailRecord},
    push::{
        evaluate::{NotificationRecord, ThreadTotal},
        pushers::PusherRecord,
    },
    rooms::{state::Snapshot, AliasRecord, EventMeta, MembershipRecord, OutlierMeta, RoomRecord},
    users::{
        account_data::AccountDataRecord,
        account_validity::Validity,
        threepid::{ThreepidRecord, ValidationSession},
        Account, Device, TokenOwner,
    },
};

/// Column family names; `Database::open` creates them all.
pub const NAMES: &[&str] = &[
    "metakey_count",
    "serverkeyid_keypair",
    "userid_account",
    "userid_profile",
    "userdeviceid_device",
    "tokenhash_session",
    "useridroomidtype_accountdata",
    "useridfilterid_filter",
    "eventid_pdu",
    "eventid_meta",
    "pos_eventid",
    "roomidpos_eventid",
    "roomid_room",
    "statekey_short",
    "short_statekey",
    "snapshotid_snapshot",
    "useridroomid_membership",
    "roomiduserid_membership",
    "roomiduserpos_membership",
    "roomidpos_visibility",
    "useriddevicetxn_eventid",
    "eventid_devicetxn",
    "alias_roomid",
    "roomid_published",
    "parentpos_childeventid",
    "useridpos_accountdata",
    "roomidpos_receipt",
    "roomidslot_receiptpos",
    "useriddevicepos_todevice",
    "useriddevicetxn_todevice",
    "userid_presence",
    "pos_presence",
    "userdeviceid_devicekeys",
    "userdevicekeyid_onetimekey",
    "userdevicealgorithm_fallbackkey",
    "useridusage_crosssigningkey",
    "targetkeysigner_signatures",
    "pos_keychange",
    "useridversion_backup",
    "useridversionroomsession_roomkey",
    "mediaid_meta",
    "reportid_report",
    "auditid_entry",
    "token_registrationtoken",
    "roomid_blocked",
    "userid_noticeroom",
    "sha256_refcount",
    "useridmediaid_pending",
    "sha256size_thumbnail",
    "sha256_verdict",
    "keyid_secret",
    "serverkeyid_oldkey",
    "servername_serverkeys",
    "eventid_outlier",
    "servername_sentpos",
    "origintxn_done",
    "receivedseq_origintxn",
    "servernamepos_edu",
    "useridroomidpos_notification",
    "useridpos_notification",
    "useridroomid_notifytotal",
    "useridroomid_mainnotifytotal",
    "useridroomidthread_notifytotal",
    "useridroomidthreadpos_notifytotal",
    "roomidpos_threadroot",
    "delayid_delayed",
    "useriddelayid_delayid",
    "duedelayid_delayid",
    "roomidtypestatekeydelayid_delayid",
    "refreshhash_session",
    "openidhash_user",
    "loginhash_user",
    "userid_validity",
    "renewalhash_userid",
    "dueuserid_userid",
    "sid_threepidsession",
    "attempthash_sid",
    "useridmediumaddress_threepid",
    "mediumaddress_userid",
    "useridpushkey_pusher",
    "appidpushkey_userid",
    "pusherpos_pending",
    "addresstoken_threepidinvite",
];

/// (user, room, thread root, position): a key per thread reply and notified member.
pub type UserRoomThreadPos = (OwnedUserId, OwnedRoomId, String, Be64);

pub struct Tables {
    /// Named counters (the global stream counter).
    pub meta: Table<String, Be64>,
    /// This server's signing keys: key id (`ed25519:…`) → PKCS#8 document.
    pub serverkeyid_keypair: Table<String, Vec<u8>>,
    pub userid_account: Table<OwnedUserId, Json<Account>>,
    /// Profile fields (`displayname`, `avatar_url`, extended fields) as one JSON object.
    pub userid_profile: Table<OwnedUserId, Json<BTreeMap<String, serde_json::Value>>>,
    pub userdeviceid_device: Table<(OwnedUserId, OwnedDeviceId), Json<Device>>,
    /// sha256(access token) → its user and device; tokens themselves are never stored.
    pub tokenhash_session: Table<Vec<u8>, Json<TokenOwner>>,
    /// sha256(refresh token) → its user and device; like access tokens, never stored in clear.
    pub refreshhash_session: Table<Vec<u8>, Json<TokenOwner>>,
    /// sha256(OpenID token) → (user, expiry ms): tokens a user hands to a widget or integration
    /// manager, which checks them with `/_matrix/federation/v1/openid/userinfo`.
    pub openidhash_user: Table<Vec<u8>, Json<(OwnedUserId, u64)>>,
    /// sha256(login token) → (user, expiry ms): single-use tokens from `/login/get_token` that
    /// sign a new device in with `m.login.token`.
    pub loginhash_user: Table<Vec<u8>, Json<(OwnedUserId, u64)>>,
    /// Account → its expiry, the renewal emails sent this period, its latest renewal link (`[account_validity]`).
    pub userid_validity: Table<OwnedUserId, Json<Validity>>,
    /// SHA-256(renewal link token) → the account it renews.
    pub renewalhash_userid: Table<Vec<u8>, Json<OwnedUserId>>,
    /// (due time as big-endian u64, user) → user: when each account's next validity step (a renewal
    /// email, a deactivation) is due, read in time order by one task.
    pub dueuserid_userid: Table<Vec<u8>, Json<OwnedUserId>>,
    /// Email validation sessions by id (only hashes of the client secret and token).
    pub sid_threepidsession: Table<String, Json<ValidationSession>>,
    /// SHA-256 of (purpose, client secret, address) → (session id, last `send_attempt`): a
    /// repeated attempt gets the same session and no second email.
    pub attempthash_sid: Table<Vec<u8>, Json<(String, u64)>>,
    /// (user, medium, address) → when it was added and validated.
    pub useridmediumaddress_threepid: Table<(OwnedUserId, String, String), Json<ThreepidRecord>>,
    /// (email address, token) → a third-party invite this node sent, until the address is bound
    /// here (ministry network, docs/network.md).
    pub addresstoken_threepidinvite: Table<(String, String), Json<crate::rooms::PendingInvite>>,
    /// (medium, address) → the account it belongs to (one account per address).
    pub mediumaddress_userid: Table<(String, String), OwnedUserId>,
    /// (user, app id, pushkey) → a pusher and the device that set it.
    pub useridpushkey_pusher: Table<(OwnedUserId, String, String), Json<PusherRecord>>,
    /// (app id, pushkey, user): who registered a pushkey, so a pushkey moving to another user
    /// leaves the previous one (`append: false`).
    pub appidpushkey_userid: Table<(String, String, OwnedUserId), Vec<u8>>,
    /// (user, app id, pushkey, position) → room: notifications waiting for a push gateway.
    pub pusherpos_pending: Table<(OwnedUserId, String, String, Be64), OwnedRoomId>,
    /// (user, room id or "" for global, event type) → content.
    pub useridroomidtype_accountdata: Table<(OwnedUserId, String, String), Json<AccountDataRecord>>,
    /// (user, stream position) → (room or "", type) of an account data change, for sync.
    pub useridpos_accountdata: Table<(OwnedUserId, Be64), Json<(String, String)>>,
    /// (room, stream position) → a read receipt; one live entry per user, type and thread.
    pub roomidpos_receipt: Table<(OwnedRoomId, Be64), Json<Receipt>>,
    /// (room, user/type/thread slot) → position of that slot's current receipt.
    pub roomidslot_receiptpos: Table<(OwnedRoomId, String), Be64>,
    /// A device's to-device inbox: (user, device, stream position) → message.
    pub useriddevicepos_todevice: Table<(OwnedUserId, OwnedDeviceId, Be64), Json<ToDeviceMessage>>,
    /// (sender, sender device, txn id) of to-device sends already done.
    pub useriddevicetxn_todevice: Table<(OwnedUserId, OwnedDeviceId, String), Vec<u8>>,
    /// User → presence, and the stream position of each user's latest change.
    pub userid_presence: Table<OwnedUserId, Json<PresenceRecord>>,
    pub pos_presence: Table<Be64, OwnedUserId>,
    /// (user, filter id) → filter definition JSON.
    pub useridfilterid_filter: Table<(OwnedUserId, String), Json<serde_json::Value>>,
    /// Event id → the PDU's JSON as signed (redacted in place when a redaction applies).
    pub eventid_pdu: Table<OwnedEventId, Vec<u8>>,
    /// Event id → room, stream position, state snapshot after it.
    pub eventid_meta: Table<OwnedEventId, Json<EventMeta>>,
    /// The global event stream: position → event id (sync and senders tail this).
    pub pos_eventid: Table<Be64, OwnedEventId>,
    /// A room's timeline in order: (room, position) → event id.
    pub roomidpos_eventid: Table<(OwnedRoomId, Be64), OwnedEventId>,
    /// Room → version, current state snapshot, forward extremities, depth.
    pub roomid_room: Table<OwnedRoomId, Json<RoomRecord>>,
    /// (event type, state key) → short number, and back.
    pub statekey_short: Table<(String, String), Be64>,
    pub short_statekey: Table<Be64, Json<(String, String)>>,
    /// State snapshots as deltas.
    pub snapshotid_snapshot: Table<Be64, Json<Snapshot>>,
    /// Memberships, by user and by room.
    pub useridroomid_membership: Table<(OwnedUserId, OwnedRoomId), Json<MembershipRecord>>,
    pub roomiduserid_membership: Table<(OwnedRoomId, OwnedUserId), Json<MembershipRecord>>,
    /// Every membership change: (room, user, position) → membership. What a user may read of a
    /// room's history follows these periods (`rooms::visibility`).
    pub roomiduserpos_membership: Table<(OwnedRoomId, OwnedUserId, Be64), String>,
    /// Every change of a room's history visibility: (room, position) → the new setting.
    pub roomidpos_visibility: Table<(OwnedRoomId, Be64), String>,
    /// (user, device, transaction id) → the event it produced, for idempotent sends.
    pub useriddevicetxn_eventid: Table<(OwnedUserId, OwnedDeviceId, String), OwnedEventId>,
    /// The other way: a local event → the device that sent it and the client's transaction id,
    /// for `unsigned.transaction_id` on that device's copy.
    pub eventid_devicetxn: Table<OwnedEventId, Json<(OwnedDeviceId, String)>>,
    /// Room alias → room and who created the alias.
    pub alias_roomid: Table<String, Json<AliasRecord>>,
    /// Rooms published in the public directory.
    pub roomid_published: Table<OwnedRoomId, Vec<u8>>,
    /// (related-to event id, position) → the relating event (edits, reactions, threads, replies).
    pub parentpos_childeventid: Table<(OwnedEventId, Be64), OwnedEventId>,
    /// A device's identity keys as the device signed them, plus signatures added later.
    pub userdeviceid_devicekeys: Table<(OwnedUserId, OwnedDeviceId), Json<serde_json::Value>>,
    /// Unclaimed one-time keys: (user, device, `algorithm:key id`) → key.
    pub userdevicekeyid_onetimekey: Table<(OwnedUserId, OwnedDeviceId, String), Json<serde_json::Value>>,
    /// The fallback key of each device and algorithm, handed out when one-time keys run out.
    pub userdevicealgorithm_fallbackkey: Table<(OwnedUserId, OwnedDeviceId, String), Json<FallbackKey>>,
    /// Cross-signing keys: (user, `master` | `self_signing` | `user_signing`) → key.
    pub useridusage_crosssigningkey: Table<(OwnedUserId, String), Json<serde_json::Value>>,
    /// Signatures one user made on another user's key, shown only to the signer:
    /// (signed user, signed key id, signer) → `{ signing key id: signature }`.
    pub targetkeysigner_signatures: Table<(OwnedUserId, String, OwnedUserId), Json<serde_json::Value>>,
    /// The device list stream: position → user whose devices or keys changed.
    pub pos_keychange: Table<Be64, OwnedUserId>,
    /// Key backup versions: (user, version) → algorithm, auth data, etag.
    pub useridversion_backup: Table<(OwnedUserId, String), Json<BackupVersion>>,
    /// Backed-up room keys: (user, version, room, session id) → encrypted session data.
    pub useridversionroomsession_roomkey: Table<(OwnedUserId, String, String, String), Json<serde_json::Value>>,
    /// (origin server, media id) → uploader, content type, file name, content address and size.
    pub mediaid_meta: Table<(OwnedServerName, String), Json<MediaRecord>>,
    /// Reports of events, rooms and users, by a counter id.
    pub reportid_report: Table<Be64, Json<crate::reports::Report>>,
    /// The admins' audit log: counter id → who did what to what, and when.
    pub auditid_entry: Table<Be64, Json<crate::audit::AuditEntry>>,
    /// Registration tokens made by admins: token → uses allowed and made, expiry.
    pub token_registrationtoken: Table<String, Json<crate::users::registration_tokens::RegistrationToken>>,
    /// Rooms an admin blocked: nobody of this server may join or be invited (→ the admin).
    pub roomid_blocked: Table<OwnedRoomId, String>,
    /// Each user's server notices room.
    pub userid_noticeroom: Table<OwnedUserId, OwnedRoomId>,
    /// Content SHA-256 → how many media ids and thumbnails use that stored file.
    /// Media ids reserved with `/media/v1/create` and not uploaded yet: (uploader, id) → expiry ms.
    pub useridmediaid_pending: Table<(OwnedUserId, String), Be64>,
    pub sha256_refcount: Table<String, Be64>,
    /// (source content SHA-256, `<w>x<h>-<method>`) → the cached thumbnail.
    pub sha256size_thumbnail: Table<(String, String), Json<ThumbnailRecord>>,
    /// Content SHA-256 (of the decrypted contents, for an encrypted attachment scanned with its
    /// key) → what the antivirus found: clean or the signature that matched, the sniffed type.
    pub sha256_verdict: Table<String, Json<Verdict>>,
    /// Secrets of services other than the signing key: `curve25519:content_scanner` → the content
    /// scanner API's private key (32 bytes).
    pub keyid_secret: Table<String, Vec<u8>>,
    /// Our retired signing keys: key id → (public key, when it was retired), still published.
    pub serverkeyid_oldkey: Table<String, Json<(String, u64)>>,
    /// Other servers' signing keys as they published them (verified), until `valid_until_ts`.
    pub servername_serverkeys: Table<OwnedServerName, Json<RemoteKeySet>>,
    /// Events we hold but that are not in a timeline: state and auth events of remote rooms,
    /// rejected and soft-failed events. Event id → room and why.
    pub eventid_outlier: Table<OwnedEventId, Json<OutlierMeta>>,
    /// Per destination server: the stream position its PDUs are delivered up to.
    pub servername_sentpos: Table<OwnedServerName, Be64>,
    /// (origin, transaction id) of inbound transactions already processed.
    pub origintxn_done: Table<(OwnedServerName, String), Vec<u8>>,
    /// The same transactions in the order received (ms << 20 | sequence), so that old ids are
    /// dropped by a scan of what is to go, never of everything kept.
    pub receivedseq_origintxn: Table<Be64, Json<(OwnedServerName, String)>>,
    /// Per destination: EDUs waiting to be sent, (server, position) → EDU JSON.
    pub servernamepos_edu: Table<(OwnedServerName, Be64), Json<serde_json::Value>>,
    /// (user, room, position) → the actions an event's push rules gave for the user, with the
    /// user's running notification and highlight totals in the room including it.
    pub useridroomidpos_notification: Table<(OwnedUserId, OwnedRoomId, Be64), Json<NotificationRecord>>,
    /// (user, position) → room of each notification, for `/notifications` newest first.
    pub useridpos_notification: Table<(OwnedUserId, Be64), OwnedRoomId>,
    /// (user, room) → the running (notification, highlight) totals.
    pub useridroomid_notifytotal: Table<(OwnedUserId, OwnedRoomId), Json<(u64, u64)>>,
    /// (user, room) → the running totals of the main timeline alone (events in no thread).
    pub useridroomid_mainnotifytotal: Table<(OwnedUserId, OwnedRoomId), Json<(u64, u64)>>,
    /// (user, room, thread root) → the running totals of that thread, and its latest position.
    pub useridroomidthread_notifytotal: Table<(OwnedUserId, OwnedRoomId, String), Json<ThreadTotal>>,
    /// (user, room, thread root, position) → the thread's running totals including that event,
    /// so a threaded receipt finds the totals at its position with one seek.
    pub useridroomidthreadpos_notifytotal: Table<UserRoomThreadPos, Json<(u64, u64)>>,
    /// (room, position of a thread reply) → its thread root, for `/threads` by latest activity.
    pub roomidpos_threadroot: Table<(OwnedRoomId, Be64), OwnedEventId>,
    /// Delay id → a scheduled delayed event (MSC4140), until it is sent or cancelled.
    pub delayid_delayed: Table<String, Json<crate::rooms::delayed::Delayed>>,
    /// (owner, delay id) → delay id: a user's scheduled events, listed and counted for the limit.
    pub useriddelayid_delayid: Table<(OwnedUserId, String), String>,
    /// (send time as big-endian u64, delay id) → delay id: read in time order by the one timer task.
    pub duedelayid_delayid: Table<Vec<u8>, String>,
    /// (room, type, state key, delay id) → delay id: the delayed state events another user's state
    /// event of the same key cancels.
    pub roomidtypestatekeydelayid_delayid: Table<(OwnedRoomId, String, String, String), String>,
}

impl TableSet for Tables {
    const NAMES: &'static [&'static str] = NAMES;

    fn meta(&self) -> &Table<String, Be64> {
        &self.meta
    }

    fn new(db: &Arc<DB>, reads: &Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            meta: Table::new(db, reads, "metakey_count"),
            serverkeyid_keypair: Table::new(db, reads, "serverkeyid_keypair"),
            userid_account: Table::new(db, reads, "userid_account"),
            userid_profile: Table::new(db, reads, "userid_profile"),
            userdeviceid_device: Table::new(db, reads, "userdeviceid_device"),
            tokenhash_session: Table::new(db, reads, "tokenhash_session"),
            refreshhash_session: Table::new(db, reads, "refreshhash_session"),
            openidhash_user: Table::new(db, reads, "openidhash_user"),
            loginhash_user: Table::new(db, reads, "loginhash_user"),
            userid_validity: Table::new(db, reads, "userid_validity"),
            renewalhash_userid: Table::new(db, reads, "renewalhash_userid"),
            dueuserid_userid: Table::new(db, reads, "dueuserid_userid"),
            sid_threepidsession: Table::new(db, reads, "sid_threepidsession"),
            attempthash_sid: Table::new(db, reads, "attempthash_sid"),
            useridmediumaddress_threepid: Table::new(db, reads, "useridmediumaddress_threepid"),
            addresstoken_threepidinvite: Table::new(db, reads, "addresstoken_threepidinvite"),
            mediumaddress_userid: Table::new(db, reads, "mediumaddress_userid"),
            useridpushkey_pusher: Table::new(db, reads, "useridpushkey_pusher"),
            appidpushkey_userid: Table::new(db, reads, "appidpushkey_userid"),
            pusherpos_pending: Table::new(db, reads, "pusherpos_pending"),
            useridroomidtype_accountdata: Table::new(db, reads, "useridroomidtype_accountdata"),
            useridfilterid_filter: Table::new(db, reads, "useridfilterid_filter"),
            eventid_pdu: Table::new(db, reads, "eventid_pdu"),
            eventid_meta: Table::new(db, reads, "eventid_meta"),
            pos_eventid: Table::new(db, reads, "pos_eventid"),
            roomidpos_eventid: Table::new(db, reads, "roomidpos_eventid"),
            roomid_room: Table::new(db, reads, "roomid_room"),
            statekey_short: Table::new(db, reads, "statekey_short"),
            short_statekey: Table::new(db, reads, "short_statekey"),
            snapshotid_snapshot: Table::new(db, reads, "snapshotid_snapshot"),
            useridroomid_membership: Table::new(db, reads, "useridroomid_membership"),
            roomiduserid_membership: Table::new(db, reads, "roomiduserid_membership"),
            roomiduserpos_membership: Table::new(db, reads, "roomiduserpos_membership"),
            roomidpos_visibility: Table::new(db, reads, "roomidpos_visibility"),
            useriddevicetxn_eventid: Table::new(db, reads, "useriddevicetxn_eventid"),
            eventid_devicetxn: Table::new(db, reads, "eventid_devicetxn"),
            alias_roomid: Table::new(db, reads, "alias_roomid"),
            roomid_published: Table::new(db, reads, "roomid_published"),
            parentpos_childeventid: Table::new(db, reads, "parentpos_childeventid"),
            useridpos_accountdata: Table::new(db, reads, "useridpos_accountdata"),
            roomidpos_receipt: Table::new(db, reads, "roomidpos_receipt"),
            roomidslot_receiptpos: Table::new(db, reads, "roomidslot_receiptpos"),
            useriddevicepos_todevice: Table::new(db, reads, "useriddevicepos_todevice"),
            useriddevicetxn_todevice: Table::new(db, reads, "useriddevicetxn_todevice"),
            userid_presence: Table::new(db, reads, "userid_presence"),
            pos_presence: Table::new(db, reads, "pos_presence"),
            userdeviceid_devicekeys: Table::new(db, reads, "userdeviceid_devicekeys"),
            userdevicekeyid_onetimekey: Table::new(db, reads, "userdevicekeyid_onetimekey"),
            userdevicealgorithm_fallbackkey: Table::new(db, reads, "userdevicealgorithm_fallbackkey"),
            useridusage_crosssigningkey: Table::new(db, reads, "useridusage_crosssigningkey"),
            targetkeysigner_signatures: Table::new(db, reads, "targetkeysigner_signatures"),
            pos_keychange: Table::new(db, reads, "pos_keychange"),
            useridversion_backup: Table::new(db, reads, "useridversion_backup"),
            useridversionroomsession_roomkey: Table::new(db, reads, "useridversionroomsession_roomkey"),
            mediaid_meta: Table::new(db, reads, "mediaid_meta"),
            reportid_report: Table::new(db, reads, "reportid_report"),
            auditid_entry: Table::new(db, reads, "auditid_entry"),
            token_registrationtoken: Table::new(db, reads, "token_registrationtoken"),
            roomid_blocked: Table::new(db, reads, "roomid_blocked"),
            userid_noticeroom: Table::new(db, reads, "userid_noticeroom"),
            sha256_refcount: Table::new(db, reads, "sha256_refcount"),
            useridmediaid_pending: Table::new(db, reads, "useridmediaid_pending"),
            sha256size_thumbnail: Table::new(db, reads, "sha256size_thumbnail"),
            sha256_verdict: Table::new(db, reads, "sha256_verdict"),
            keyid_secret: Table::new(db, reads, "keyid_secret"),
            serverkeyid_oldkey: Table::new(db, reads, "serverkeyid_oldkey"),
            servername_serverkeys: Table::new(db, reads, "servername_serverkeys"),
            eventid_outlier: Table::new(db, reads, "eventid_outlier"),
            servername_sentpos: Table::new(db, reads, "servername_sentpos"),
            origintxn_done: Table::new(db, reads, "origintxn_done"),
            receivedseq_origintxn: Table::new(db, reads, "receivedseq_origintxn"),
            servernamepos_edu: Table::new(db, reads, "servernamepos_edu"),
            useridroomidpos_notification: Table::new(db, reads, "useridroomidpos_notification"),
            useridpos_notification: Table::new(db, reads, "useridpos_notification"),
            useridroomid_notifytotal: Table::new(db, reads, "useridroomid_notifytotal"),
            useridroomid_mainnotifytotal: Table::new(db, reads, "useridroomid_mainnotifytotal"),
            useridroomidthread_notifytotal: Table::new(db, reads, "useridroomidthread_notifytotal"),
            useridroomidthreadpos_notifytotal: Table::new(db, reads, "useridroomidthreadpos_notifytotal"),
            roomidpos_threadroot: Table::new(db, reads, "roomidpos_threadroot"),
            delayid_delayed: Table::new(db, reads, "delayid_delayed"),
            useriddelayid_delayid: Table::new(db, reads, "useriddelayid_delayid"),
            duedelayid_delayid: Table::new(db, reads, "duedelayid_delayid"),
            roomidtypestatekeydelayid_delayid: Table::new(db, reads, "roomidtypestatekeydelayid_delayid"),
        }
    }
}
