// The browser console page: opens the VM's screen with noVNC's RFB library.
//
// The console URL carries a one-time token, as Nova's does:
//   console.html?path=%3Ftoken%3D<token>   (Nova style; `path` is relative to this origin)
//   console.html?token=<token>
// The page connects to ws(s)://<this host>/<path> with the `binary`
// subprotocol; the proxy checks the token, so no password is asked for.
// The token is removed from the address bar at once: it works only once.
//
// `document.body.dataset.state` tells automation where it stands:
// loading, connecting, connected, disconnected or failed.
import RFB from './novnc/1.7.0/core/rfb.js';

const status = document.getElementById('status');
const cad = document.getElementById('cad');

function show(state, text) {
    document.body.dataset.state = state;
    status.textContent = text;
}

function websocketUrl(params) {
    let path = params.get('path');
    if (path === null) {
        const token = params.get('token');
        path = token === null ? 'websockify' : '?token=' + encodeURIComponent(token);
    }
    // Always this origin: a leading slash (or two) must not name another host.
    path = path.replace(/^\/+/, '');
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${window.location.host}/${path}`;
}

const params = new URLSearchParams(window.location.search);
const url = websocketUrl(params);
window.history.replaceState(null, '', window.location.pathname);

show('connecting', 'Connecting\u2026');
const options = { wsProtocols: ['binary'], shared: true };
const password = params.get('password');
if (password !== null) {
    options.credentials = { password };
}
const rfb = new RFB(document.getElementById('screen'), url, options);
rfb.scaleViewport = false;
rfb.resizeSession = false;

let desktop = 'the console';
rfb.addEventListener('desktopname', (e) => {
    desktop = e.detail.name;
    if (document.body.dataset.state === 'connected') {
        show('connected', `Connected to ${desktop}`);
    }
});
rfb.addEventListener('connect', () => {
    show('connected', `Connected to ${desktop}`);
    cad.disabled = false;
});
rfb.addEventListener('disconnect', (e) => {
    cad.disabled = true;
    if (e.detail.clean) {
        show('disconnected', 'Disconnected.');
    } else {
        show('failed', 'The console connection failed or was refused: console links work once and only for a short time; request a new one.');
    }
});
rfb.addEventListener('securityfailure', (e) => {
    show('failed', `Refused: ${e.detail.reason || 'authentication failed'}`);
});
rfb.addEventListener('credentialsrequired', () => {
    show('failed', 'This console asks for a password; open the URL the API returned.');
    rfb.disconnect();
});
cad.addEventListener('click', () => rfb.sendCtrlAltDel());
