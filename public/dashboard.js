// The live dashboard: the TypeScript client (served at /client/) subscribed
// to the traffic channels; the token comes from ?token=.
import { UipClient, apply, fromSnapshot } from '/client/index.js';

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get('token');
const states = new Map();
let count = 0;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const where = (loc) => (loc ? `${loc.lat.toFixed(3)}, ${loc.lon.toFixed(3)}` : '');

const renderers = {
  'traffic.flow': (items) => {
    const box = $('cameras');
    box.replaceChildren(
      ...items
        .sort((a, b) => a.data.camera_id.localeCompare(b.data.camera_id))
        .map((e) => {
          const d = e.data;
          const card = el('div', { class: `camera ${d.congestion_level ?? ''}`, 'data-camera': d.camera_id });
          card.append(el('b', {}, d.camera_id), el('span', {}, `${d.intensity} veh · ${d.average_speed} km/h · ${d.congestion_level}`));
          return card;
        }),
    );
  },
  accidents: (items) => {
    $('accidents').replaceChildren(
      ...items.map((e) => {
        const d = e.data;
        const li = el('li', { 'data-id': d.id, class: `sev-${d.severity ?? ''}` });
        li.textContent = `${d.id} · ${d.severity ?? ''} ${d.status ? `· ${d.status}` : ''} ${d.camera_id ? `· ${d.camera_id}` : ''}`;
        return li;
      }),
    );
  },
  congestion: (items) => {
    $('congestion').replaceChildren(
      ...items.map((e) => el('li', { 'data-zone': e.data.zone_id }, `${e.data.zone_id} · ${e.data.level} · +${e.data.estimated_delay} min · ${(e.data.affected_roads ?? []).join(', ')}`)),
    );
  },
  weather: (items) => {
    $('weather').replaceChildren(
      ...items.map((e) =>
        e.type === 'weather.alert'
          ? el('div', { class: 'tile alert' }, `⚠ ${e.data.alert_type} (${e.data.severity}) until ${new Date(e.data.end_time).toLocaleTimeString()}`)
          : el('div', { class: 'tile' }, `${e.data.temperature} °C · ${e.data.conditions} · ${where(e.data.location)}`),
      ),
    );
  },
  'air-quality': (items) => {
    $('air').replaceChildren(...items.map((e) => el('div', { class: 'tile' }, `AQI ${e.data.aqi} · ${e.data.category} · ${where(e.data.location)}`)));
  },
  'cameras.status': () => {},
};

function render(channel) {
  renderers[channel]?.([...(states.get(channel) ?? new Map()).values()]);
}

function noteEvent(e) {
  count += 1;
  $('count').textContent = String(count);
  $('last').textContent = `${e.type} #${e.seq}`;
  if (e.channel === 'traffic.flow') {
    const card = document.querySelector(`[data-camera="${e.data.camera_id}"]`);
    card?.classList.add('flash');
    setTimeout(() => card?.classList.remove('flash'), 400);
  }
}

function alertItem(e) {
  const d = e.data;
  return el('li', { class: `prio-${d.priority ?? ''}`, 'data-alert': d.id ?? '' }, `${new Date(e.timestamp).toLocaleTimeString()} · ${d.title ?? d.id} — ${d.message ?? ''}`);
}

if (!token) {
  $('problem').hidden = false;
  $('problem').textContent = 'Open this page with ?token=<subscriber token> (npm run dev prints a ready link).';
} else {
  const client = new UipClient({ url: location.origin, token });
  client.on('state', (s) => {
    $('status').textContent = s;
    $('status').className = `status ${s}`;
  });
  client.on('error', (e) => {
    $('problem').hidden = false;
    $('problem').textContent = `${e.code}: ${e.message}`;
  });
  for (const channel of Object.keys(renderers)) {
    client.subscribe(channel, {
      onSnapshot: (events) => {
        states.set(channel, fromSnapshot(events));
        render(channel);
      },
      onEvent: (e) => {
        states.set(channel, apply(states.get(channel) ?? new Map(), e));
        render(channel);
        noteEvent(e);
      },
    });
  }
  client.subscribe('alerts', {
    onSnapshot: (events) => $('alerts').replaceChildren(...events.reverse().map(alertItem)),
    onEvent: (e) => {
      $('alerts').prepend(alertItem(e));
      while ($('alerts').children.length > 50) $('alerts').lastChild.remove();
      noteEvent(e);
    },
  });
  client.connect();
  window.__uip = client;
}
