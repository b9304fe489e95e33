# Chat latency percentiles against offered load, for test/bench/bench.py:
#   gnuplot -e "data='chat-latency.dat'; out='chat-latency.png'; \
#       term='pngcairo'; subtitle='...'" test/bench/plot.gp
# data: one line per open-loop run: rate (messages/s), offered deliveries/s,
# delivered/s, p50, p90, p99, p99.9, max (ms). term: pngcairo, or png
# where gnuplot was built without cairo. mark: the offered deliveries/s of
# the latency target (a vertical line), 0 for none.
if (!exists("term")) term = "pngcairo"
if (!exists("subtitle")) subtitle = ""
if (!exists("mark")) mark = 0
eval sprintf("set terminal %s size 960,640", term)
set output out
set title "GoChat chat latency against offered load\n{/*0.8 ".subtitle."}"
set xlabel "offered deliveries/s (messages/s x room size); dotted: 200 messages/s"
set ylabel "latency, send to delivery (ms)"
set logscale y
set grid xtics ytics mytics
set key below horizontal box
set format x "%.0s%c"
set xrange [0:*]
set offsets 0, graph 0.05, 0, 0
set yrange [0.5:*]
if (mark > 0) set arrow from mark, graph 0 to mark, graph 1 nohead dt 3 lc rgb "#666666"
set style line 1 lw 2 pt 7 ps 1.2 lc rgb "#1b9e77"
set style line 2 lw 2 pt 5 ps 1.2 lc rgb "#7570b3"
set style line 3 lw 2 pt 9 ps 1.4 lc rgb "#d95f02"
set style line 4 lw 2 pt 11 ps 1.4 lc rgb "#e7298a"
set style line 5 lw 1 dt 2 lc rgb "#d95f02"
set style line 6 lw 1 dt 2 lc rgb "#e7298a"
plot data using 2:4 with linespoints ls 1 title "p50", \
     data using 2:5 with linespoints ls 2 title "p90", \
     data using 2:6 with linespoints ls 3 title "p99", \
     data using 2:7 with linespoints ls 4 title "p99.9", \
     10 with lines ls 5 title "p99 target", \
     25 with lines ls 6 title "p99.9 target"
