// `useChannel`: a channel's live state (latest per key) and the connection's
// status, for React 18+.

import { useEffect, useState } from 'react';

import type { ChannelEvent, ConnectionState, UipClient, UipError } from './index.js';
import { apply, fromSnapshot } from './state.js';

export interface ChannelState {
  /** Latest event per key, oldest first. */
  items: ChannelEvent[];
  /** The connection's state. */
  status: ConnectionState;
  /** The last error of this subscription or connection. */
  error: UipError | undefined;
  /** The last `seq` applied. */
  seq: number | undefined;
}

/** Subscribes `client` to `channel` with `filters` while the component is mounted. */
export function useChannel(client: UipClient, channel: string, filters?: Record<string, unknown>): ChannelState {
  const [state, setState] = useState<Map<string, ChannelEvent>>(() => new Map());
  const [status, setStatus] = useState<ConnectionState>(client.state);
  const [error, setError] = useState<UipError | undefined>(undefined);
  const [seq, setSeq] = useState<number | undefined>(undefined);
  const filterKey = JSON.stringify(filters ?? null);
  useEffect(() => {
    const offState = client.on('state', setStatus);
    const offError = client.on('error', setError);
    const sub = client.subscribe(channel, {
      filters,
      onSnapshot: (events, head) => {
        setState(fromSnapshot(events));
        setSeq(head);
      },
      onEvent: (e) => {
        setState((s) => apply(s, e));
        setSeq(e.seq);
      },
      onError: setError,
    });
    client.connect();
    return () => {
      sub.unsubscribe();
      offState();
      offError();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, channel, filterKey]);
  return { items: [...state.values()], status, error, seq };
}
