// A channel's live state as the gateway's snapshot rules keep it: the latest
// event per key, so memory stays bounded however long events flow.

import type { ChannelEvent } from './index.js';

/** The key field per event type of the known channels (the snapshot rules). */
const KEY_FIELDS: Record<string, string> = {
  'traffic.flow': 'camera_id',
  'cameras.status': 'camera_id',
  'accidents.new': 'id',
  'accidents.update': 'id',
  'accidents.resolved': 'id',
  alert: 'id',
  'congestion.update': 'zone_id',
  'traffic.patterns': 'zone_id',
  'traffic.patterns.update': 'zone_id',
  'weather.alert': 'alert_type',
  'weather.update': 'location',
  'air-quality.update': 'location',
};

/** The key an event is kept under; namespaced channels keep the last 100 events by `seq`. */
export function keyOf(e: ChannelEvent): string {
  const field = KEY_FIELDS[e.type];
  const value = field === undefined ? undefined : (e.data as Record<string, unknown>)[field];
  if (value === undefined) return `seq:${e.seq % 100}`;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Whether an event ends its key's life (a resolved accident or alert). */
function ends(e: ChannelEvent): boolean {
  const d = e.data as Record<string, unknown>;
  return e.type === 'accidents.resolved' || (e.type === 'alert' && (d.status === 'resolved' || d.resolved === true));
}

/** Applies an event to the state: merged over its key's previous data, or removed when it ends. */
export function apply(state: ReadonlyMap<string, ChannelEvent>, e: ChannelEvent): Map<string, ChannelEvent> {
  const next = new Map(state);
  const key = keyOf(e);
  if (ends(e)) {
    next.delete(key);
    return next;
  }
  const before = next.get(key);
  next.set(key, before ? { ...e, data: { ...before.data, ...e.data } } : e);
  return next;
}

/** The state a snapshot describes. */
export function fromSnapshot(events: ChannelEvent[]): Map<string, ChannelEvent> {
  let state = new Map<string, ChannelEvent>();
  for (const e of events) state = apply(state, e);
  return state;
}
