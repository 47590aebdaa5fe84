-- Records that did not end ok: status and reason, newest first
SELECT started, cell, measurement, backend, dtype, seed, status, reason, file, line
FROM records
WHERE status <> 'ok'
ORDER BY started DESC, file, line;
