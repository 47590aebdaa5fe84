-- Records per measurement, backend and status
SELECT measurement, backend, status, count(*) AS records
FROM records
GROUP BY ALL
ORDER BY measurement, backend, status;
