// nginx njs: the event a request is about, as the key of `hash ... consistent`
// in deploy/nginx.conf, so that every request of one event reaches one
// instance. From the path on the routes that carry it (nginx has already
// percent-decoded $uri, as the server does); from the JSON body on the
// legacy routes that do not (the body is read before the upstream is
// chosen). The integer 7 and the string "7" are one event, as for the
// server. Empty (no event): nginx then picks an instance round-robin.

var IN_PATH = /^\/api\/(?:events|status)\/([^\/]+)/;
var IN_BODY = ['/api/book', '/api/cancel', '/api/initialize', '/api/events'];

function event_key(r) {
    var inPath = r.uri.match(IN_PATH);
    if (inPath) {
        return inPath[1];
    }
    if (r.method === 'POST' && IN_BODY.indexOf(r.uri) >= 0) {
        try {
            var id = JSON.parse(r.requestText).eventId;
            if (typeof id === 'number' || typeof id === 'string') {
                return String(id);
            }
        } catch (e) {
            // Not JSON: the server answers 400, from any instance.
        }
    }
    return '';
}

export default { event_key };
