-- Speed of one training step per commit, backend and cell: samples/s and EP / BPTT time ratio
SELECT left(commit, 10) AS commit, backend, device, cell,
       count(*) AS records,
       round(median(speed_ep_samples_per_s), 1) AS ep_samples_per_s,
       round(median(speed_bptt_samples_per_s), 1) AS bptt_samples_per_s,
       round(median(speed_ep_step_seconds / speed_bptt_step_seconds), 3) AS ep_over_bptt
FROM records
WHERE measurement = 'speed' AND status = 'ok'
GROUP BY ALL
ORDER BY min(started), backend, device, cell;
