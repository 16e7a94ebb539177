//! Kubernetes Events about a rollout (events.k8s.io/v1), named so that each is written once.
//!
//! An Event's name is a hash of the rollout's uid and generation, the status the decision started
//! from, and the Event's place in that decision. A controller killed after writing Events but
//! before writing the status makes the same decision from the same status when it comes back, so
//! the same names: the API server answers "already exists" and no transition is announced twice.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use modelrollout_api::ModelRollout;

use crate::decision::EventNote;
use crate::{Error, Result};

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "rollouts.modelops.io/modelrollout-controller";

/// The longest note the API server takes (1 kB).
const NOTE_LIMIT: usize = 1024;

/// Writes `notes` about `rollout`; an Event that already exists is not written again.
pub async fn publish(
    client: &Client,
    rollout: &ModelRollout,
    notes: &[EventNote],
    instance: &str,
    now: Timestamp,
) -> Result<()> {
    let namespace = rollout.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    for (index, note) in notes.iter().enumerate() {
        let event = event(rollout, note, index, instance, now);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => {
                return Err(Error::Event { reason: note.reason.as_str(), source });
            }
        }
    }
    Ok(())
}

/// The Event object for one note.
pub fn event(
    rollout: &ModelRollout,
    note: &EventNote,
    index: usize,
    instance: &str,
    now: Timestamp,
) -> Event {
    let mut text = note.note.clone();
    if text.len() > NOTE_LIMIT {
        let mut cut = NOTE_LIMIT - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(rollout, note, index)),
            namespace: rollout.namespace(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(note.reason.as_str().to_owned()),
        reason: Some(note.reason.as_str().to_owned()),
        note: Some(text),
        type_: Some(note.kind.as_str().to_owned()),
        regarding: Some(ObjectReference {
            api_version: Some(ModelRollout::api_version(&()).into_owned()),
            kind: Some(ModelRollout::kind(&()).into_owned()),
            name: rollout.metadata.name.clone(),
            namespace: rollout.namespace(),
            uid: rollout.metadata.uid.clone(),
            resource_version: rollout.metadata.resource_version.clone(),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Event::default()
    }
}

/// `<rollout>.<16 hex digits>`: the same for the same decision from the same status.
pub fn event_name(rollout: &ModelRollout, note: &EventNote, index: usize) -> String {
    let status = serde_json::to_string(&rollout.status).unwrap_or_default();
    let uid = rollout.metadata.uid.as_deref().unwrap_or_default();
    let generation = rollout.metadata.generation.unwrap_or_default().to_string();
    let index = index.to_string();
    let hash = crate::fnv64([uid, &generation, &status, &index, note.reason.as_str()]);
    let mut name = rollout.name_any();
    name.truncate(253 - 17);
    format!("{name}.{hash:016x}")
}
