-- EP against BPTT: test error (%) of the last epoch per cell and backend, over seeds
SELECT cell, backend, dtype,
       count(*) AS seeds,
       round(avg(ep_test), 2) AS ep_test,
       round(avg(bptt_test), 2) AS bptt_test,
       round(avg(ep_minus_bptt), 2) AS ep_minus_bptt,
       round(stddev_samp(ep_minus_bptt), 2) AS ep_minus_bptt_std
FROM records
WHERE measurement = 'train' AND status = 'ok'
GROUP BY ALL
ORDER BY cell, backend, dtype;
