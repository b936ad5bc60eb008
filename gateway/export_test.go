package gateway

// LongestArray exports longestArray to the fuzz test.
var LongestArray = longestArray
