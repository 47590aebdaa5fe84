-- GDU: cosine and RMSE per layer (EP against BPTT), over names and seeds, per cell and backend
SELECT r.cell, r.backend, r.dtype, r.estimator, g.layer,
       count(DISTINCT r.seed) AS seeds,
       min(g.cosine) AS min_cosine,
       round(avg(g.cosine), 6) AS mean_cosine,
       max(g.rmse) AS max_rmse
FROM gdu AS g JOIN records AS r USING (id)
WHERE r.status = 'ok'
GROUP BY ALL
ORDER BY r.cell, r.backend, r.dtype, r.estimator, g.layer;
